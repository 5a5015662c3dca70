"""dqnfast.agent.reinforce and dqnfast.training.reinforce: the maths by hand, learning, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from dqnfast.agent.reinforce import PolicyLearner, PolicyNetwork, policy_loss, returns_to_go
from dqnfast.config import Config, ConfigError
from dqnfast.training import check_config


# ------------------------------------------------------------------ the maths
def test_returns_to_go_match_a_hand_computation_with_episode_ends_inside_the_batch():
    g = 0.9
    # env 0: episode [1, 2] ends at t=1, then [3, 4, 5]; env 1: one episode [1, 1, 1, 1, 1]
    rewards = np.array([[1, 1], [2, 1], [3, 1], [4, 1], [5, 1]], np.float32)
    dones = np.array([[0, 0], [1, 0], [0, 0], [0, 0], [1, 1]], bool)
    want0 = [1 + g * 2, 2, 3 + g * 4 + g * g * 5, 4 + g * 5, 5]
    want1 = [sum(g**k for k in range(5 - t)) for t in range(5)]
    got = returns_to_go(rewards, dones, g)
    np.testing.assert_allclose(got[:, 0], want0, rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], want1, rtol=1e-12)


def test_loss_is_minus_the_sum_of_log_pi_times_return_minus_baseline():
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]], requires_grad=True)
    actions = torch.tensor([1, 0, 1])
    returns = torch.tensor([3.0, 2.0, 1.0])
    b = 2.0
    p = [np.exp(1) / (1 + np.exp(1)), np.exp(2) / (np.exp(2) + np.exp(-1)), 0.5]
    want = -sum(np.log(pi) * (gt - b) for pi, gt in zip(p, [3.0, 2.0, 1.0])) / 2  # two episodes
    got = policy_loss(logits, actions, returns, torch.ones(3), 2, b)
    assert got.item() == pytest.approx(want, rel=1e-6)
    masked = policy_loss(logits, actions, returns, torch.tensor([1.0, 1.0, 0.0]), 2, b)
    assert masked.item() == pytest.approx(-(np.log(p[0]) * 1 + np.log(p[1]) * 0) / 2, rel=1e-6)


def test_an_update_raises_the_probability_of_actions_with_above_baseline_returns():
    torch.manual_seed(0)
    net = PolicyNetwork(2, 2, [], value=False)
    learner = PolicyLearner(net, lr=0.1, gamma=1.0, baseline="mean")
    obs = np.ones((1, 2, 2), np.float32)
    actions = np.array([[1, 0]])
    rewards = np.array([[1.0, 0.0]], np.float32)
    dones = np.ones((1, 2), bool)
    mask = np.ones((1, 2), bool)
    before = torch.softmax(net(torch.ones(1, 2)), -1)[0, 1].item()
    learner.update(obs, actions, rewards, dones, mask)
    assert torch.softmax(net(torch.ones(1, 2)), -1)[0, 1].item() > before


# ------------------------------------------------------------------ config
def test_reinforce_on_an_atari_game_is_a_config_error():
    cfg = Config(game="Pong", learner="reinforce")
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert e.value.key == "learner"


def test_cli_reinforce_on_atari_is_one_line_exit_2(run_cli):
    proc, _ = run_cli("preset=reinforce", "game=Pong", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: learner:"), proc.stderr


def test_cli_bad_baseline_is_one_line_exit_2(run_cli):
    proc, _ = run_cli("preset=reinforce", "reinforce.baseline=median", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "reinforce.baseline" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ the CLI
def test_cli_runs_reinforce_end_to_end_and_writes_metrics_and_eval(run_cli):
    proc, out = run_cli(
        "preset=reinforce",
        "envs.num_envs=4",
        "algo.total_steps=300",
        "logger.log_every=100",
        "logger.progress=false",
        "envs.eval.episodes=2",
        "envs.eval.num_envs=2",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and int(rows[-1]["env_steps"]) >= 300 and int(rows[-1]["updates"]) >= 1
    ev = json.loads((out / "eval.json").read_text())
    assert ev["game"] == "CartPole-v1" and len(ev["scores"]) == 2
    assert (out / "checkpoint.pt").is_file()  # python -m dqnfast.evaluate plays it: tests/test_evaluate.py


# ------------------------------------------------------------------ learning
def _learn(total_steps: int, tmp_path, **over):
    from hydra import compose, initialize_config_dir

    from dqnfast.cli.train import CONF_DIR, to_config
    from dqnfast.training.reinforce import train_reinforce

    overrides = ["preset=reinforce", f"algo.total_steps={total_steps}", "logger.progress=false"]
    overrides += [f"{k}={v}" for k, v in over.items()]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    check_config(cfg)
    return train_reinforce(cfg, tmp_path / "run")


def test_reinforce_solves_cartpole(tmp_path):
    # preset=reinforce as shipped: 400k agent steps (~1200 episodes), about 30-40 s on 2 busy cores
    summary = _learn(400_000, tmp_path)
    assert summary["eval"]["mean"] >= 475, summary["eval"]["scores"]
