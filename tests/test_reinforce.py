"""dqnfast.agent.reinforce and dqnfast.training.reinforce: the maths by hand, learning, the CLI, resume."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume import COMPARED, finish, rows, start

from dqnfast.agent.reinforce import PolicyLearner, PolicyNetwork, policy_loss, returns_to_go
from dqnfast.checkpoint import load_checkpoint
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


def test_cli_reinforce_on_atari_is_one_line_exit_2(train_in_process, tmp_path):
    # the CLI's entry point in this process; the next test's refusal is a process of its own
    code, err = train_in_process("preset=reinforce", "game=Pong", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: learner:"), err


def test_cli_bad_baseline_is_one_line_exit_2(run_cli):
    proc, _ = run_cli("preset=reinforce", "reinforce.baseline=median", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "reinforce.baseline" in proc.stderr, proc.stderr


# ------------------------------------------------------------------ the CLI
def test_cli_runs_reinforce_end_to_end_and_writes_metrics_and_eval(train_in_process, tmp_path):
    # the CLI's entry point in this process; reinforce_finished (tests/conftest.py) is a REINFORCE
    # run in a process of its own
    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=reinforce",
        "envs.num_envs=4",
        "algo.total_steps=300",
        "logger.log_every=100",
        "logger.progress=false",
        "envs.eval.episodes=2",
        "envs.eval.num_envs=2",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert rows and int(rows[-1]["env_steps"]) >= 300 and int(rows[-1]["updates"]) >= 1
    ev = json.loads((out / "eval.json").read_text())
    assert ev["game"] == "CartPole-v1" and len(ev["scores"]) == 2
    assert (out / "checkpoint.pt").is_file()  # python -m dqnfast.evaluate plays it: tests/test_evaluate.py


def test_cli_reinforce_that_diverges_stops_in_one_line_as_dqn_does(train_in_process, tmp_path):
    """optim.lr=1e30 blows the weights up to ~1e30 while the loss stays finite (the policy collapses onto
    one action): the guard DQN uses refuses to checkpoint it, and the run ends with exit 1, not a score
    (the CLI's entry point, in this process)."""
    out = tmp_path / "run"
    code, stderr = train_in_process(
        "preset=reinforce",
        "envs.num_envs=4",
        "algo.total_steps=600",
        "optim.lr=1e30",
        "logger.progress=false",
        "envs.eval.episodes=1",
        "envs.eval.num_envs=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    err = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "training diverged at agent step" in err[0], stderr[-2000:]
    assert "logits" in err[0] and "optim.lr (now 1e+30)" in err[0] and "max_grad_norm" not in err[0], err[0]
    assert not (out / "eval.json").exists() and not (out / "checkpoint.pt").exists()


# ------------------------------------------------------------------ learning
def _learn(total_steps: int, tmp_path, resume=None, **over):
    from hydra import compose, initialize_config_dir

    from dqnfast.cli.train import CONF_DIR, to_config
    from dqnfast.training import train

    overrides = ["preset=reinforce", f"algo.total_steps={total_steps}", "logger.progress=false"]
    overrides += [f"{k}={v}" for k, v in over.items()]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    return train(cfg, tmp_path / "run", resume=resume, checked=check_config(cfg))


def test_reinforce_solves_cartpole_across_a_reseeded_resume(tmp_path, caplog):
    # preset=reinforce as shipped (400k agent steps, ~1200 episodes), in two segments: the second
    # resumes the first's checkpoint with new env seeds (envs.resume=reseed: the envs are not
    # restored, so this resume is not the uninterrupted run) and still learns to the target
    first = _learn(200_000, tmp_path, **{"envs.resume": "reseed"})
    with caplog.at_level(logging.INFO, logger="dqnfast.train"):
        summary = _learn(400_000, tmp_path, resume=tmp_path / "run", **{"envs.resume": "reseed"})
    assert "envs: re-created with seed 1000001 (envs.resume=reseed)" in caplog.text
    assert summary["run_name"] == first["run_name"] and summary["episodes"] > first["episodes"]
    steps = [int(r["env_steps"]) for r in rows(tmp_path / "run")]
    assert steps == sorted(set(steps)) and first["env_steps"] in steps and steps[-1] == summary["env_steps"]
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["counters"]["resumes"] == 1
    assert summary["eval"]["mean"] >= 475, summary["eval"]["scores"]


# ------------------------------------------------------------------ resume
RF = [
    "preset=reinforce",  # envs.resume=replay: an exact resume
    "envs.num_envs=8",
    "logger.log_every=1000",
    "logger.progress=false",
    "envs.eval.episodes=2",
    "envs.eval.num_envs=2",
    "torch_threads=1",
    "envs.num_threads=1",
]


@pytest.mark.parametrize("game", ["CartPole", "Acrobot", "MountainCar"])
def test_envs_made_from_the_seed_and_reset_as_often_continue_exactly(game):
    from dqnfast.config.schema import EnvsConfig
    from dqnfast.envs import make_env
    from dqnfast.training.reinforce import collect_episodes, replay_resets

    envs = EnvsConfig(num_envs=4, num_threads=1)

    def make():
        return make_env(game, "vector", envs, envs.train, seed=7, batch_size=4)

    env, spec = make()
    learner = PolicyLearner(PolicyNetwork(spec.obs_shape[0], spec.num_actions, [8]), lr=1e-2, gamma=0.99)
    gen = torch.Generator().manual_seed(0)
    # episodes of different lengths, cut at 60 steps: envs that ended first were auto-reset by envpool
    resets = sum(collect_episodes(env, learner, gen, 60)["resets"] for _ in range(3))
    assert resets.min() >= 3
    state = gen.get_state()
    want = collect_episodes(env, learner, gen, 60)
    env.close()
    fresh, _ = make()
    replay_resets(fresh, resets)
    gen.set_state(state)
    got = collect_episodes(fresh, learner, gen, 60)
    fresh.close()
    for k in ("obs", "actions", "rewards", "dones", "mask", "resets"):
        assert np.array_equal(got[k], want[k]), k


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, train_in_process):
    # The run that is stopped is a process of its own; the resume and the run never stopped go
    # through the CLI's entry point in this process.
    a, b, total = tmp_path / "a", tmp_path / "b", 16_000
    # stopped by SIGTERM once it has logged two rows, then resumed
    proc = start(*RF, "algo.total_steps=100000000", f"hydra.run.dir={b}", cwd=tmp_path)
    deadline = time.time() + 600  # a generous bound for a loaded machine, not a speed check
    while not ((b / "metrics.csv").exists() and len(rows(b)) >= 2):
        assert time.time() < deadline and proc.poll() is None, "the run did not log two rows"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    said = [x for x in (b / "train.log").read_text().splitlines() if "SIGTERM: stopped at" in x]
    assert "Traceback" not in err and len(said) == 1 and f"resume={b}" in said[0]
    ck = load_checkpoint(b / "checkpoint.pt")
    stopped, episodes = ck["counters"]["env_steps"], ck["counters"]["episodes"]
    assert ck["learner"] == "reinforce" and 2000 <= stopped < total
    assert episodes == 8 * ck["counters"]["updates"]  # stopped between batches: 8 whole episodes per update
    assert ck["envs"]["resets"].shape == (8,) and int(ck["envs"]["resets"].min()) >= episodes // 8
    assert not (b / "eval.json").exists() and all(int(r["env_steps"]) <= stopped for r in rows(b))

    code, err = train_in_process(f"resume={b}", f"algo.total_steps={total}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    log = (b / "train.log").read_text()
    assert f"resume: changed algo.total_steps: 100000000 -> {total}" in log
    assert f"at {stopped} agent steps" in log and "envs: restored by replaying" in log
    # the same run, never stopped
    code, err = train_in_process(*RF, f"algo.total_steps={total}", f"hydra.run.dir={a}", cwd=tmp_path)
    assert code == 0, err[-3000:]

    ra, rb = rows(a), rows(b)
    assert [r["env_steps"] for r in rb] == [r["env_steps"] for r in ra] and int(rb[-1]["env_steps"]) >= total
    for x, y in zip(ra, rb):
        assert {k: x[k] for k in COMPARED} == {k: y[k] for k in COMPARED}  # the same floats, the same text
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert cb["counters"].pop("resumes") == 1 and ca["counters"].pop("resumes") == 0
    assert ca["counters"] == cb["counters"] and torch.equal(ca["envs"]["resets"], cb["envs"]["resets"])
    for k in ca["online"]:
        assert torch.equal(ca["online"][k], cb["online"][k]), k
    for k, v in ca["optimizer"]["state"].items():
        assert all(torch.equal(v[n], cb["optimizer"]["state"][k][n]) for n in v)
    ea, eb = (json.loads((d / "eval.json").read_text()) for d in (a, b))
    assert ea["scores"] == eb["scores"]


@pytest.fixture(scope="module")
def finished_runs(reinforce_finished, cartpole_learned) -> tuple[Path, Path]:
    """A finished REINFORCE run (3000 agent steps) and a finished DQN run (preset=cartpole), both on
    CartPole by the real CLI, shared with other tests (tests/conftest.py): read, never written."""
    return reinforce_finished, cartpole_learned


def test_a_reinforce_run_prints_what_a_dqn_run_prints(finished_runs):
    """The run dir and threads lines, a bar that keeps its total when the last batch of whole
    episodes goes past algo.total_steps, and the random agent's score beside the final one."""
    from dqnfast.loggers.console import ConsoleLogger

    for run in finished_runs:  # REINFORCE, then DQN: the same lines
        log = (run / "train.log").read_text()
        assert f"run dir {run}\n" in log and "threads: " in log and "run total: " in log
        assert re.search(
            r"evaluation: \d+ games, epsilon [\d.]+: mean score [\d.]+, median [\d.]+ \(random agent: [\d.]+\)", log
        )
    console = ConsoleLogger(total_steps=2000, progress=True)
    try:
        console.progress(1600)
        console.progress(1600)  # 32 whole episodes past the total
        assert console.bar.total == 3200 and "3200/3200" in str(console.bar)
    finally:
        console.close()


def test_misfit_checkpoints_are_refused_in_one_line(finished_runs, tmp_path, train_in_process):
    # every command below is refused, and the runs stay as they were
    rf, dqn = finished_runs
    ck = load_checkpoint(rf / "checkpoint.pt")
    steps, total = ck["counters"]["env_steps"], ck["config"]["algo"]["total_steps"]
    files = ("checkpoint.pt", "metrics.csv", "eval.json")
    before = {run: {f: (run / f).read_bytes() for f in files} for run in (rf, dqn)}
    net = "error: resume: checkpoint network is policy hidden [32, 32] on float32[4], this run's is"
    cases = [
        (
            [f"resume={rf}", "game=Acrobot", "algo.total_steps=9000"],
            "error: resume: checkpoint is for CartPole-v1, this run is Acrobot-v1",
        ),
        ([f"resume={rf}", "network.mlp_hidden=[64]", "algo.total_steps=9000"], f"{net} policy hidden [64] on"),
        ([f"resume={rf}", "reinforce.baseline=value", "algo.total_steps=9000"], f"{net} policy+value hidden [32, 32]"),
        (
            [f"resume={rf}"],
            f"error: resume: the run already has {steps} agent steps and its final evaluation, and "
            f"algo.total_steps={total}; "
            "set algo.total_steps higher to continue",
        ),
        (
            [f"resume={rf}", "learner=dqn", "algo.total_steps=9000"],
            "error: resume: the checkpoint is from a learner=reinforce run, this run is learner=dqn; "
            "resume with learner=reinforce, or start a new run",
        ),
        (
            [f"resume={dqn}", "learner=reinforce", "algo.total_steps=90000"],
            "error: resume: the checkpoint is from a learner=dqn run, this run is learner=reinforce; "
            "resume with learner=dqn, or start a new run",
        ),
    ]
    for i, (args, head) in enumerate(cases):  # one at a time: each holds the run dir's lock while it checks
        # the first in a process of its own, the others through the same entry point in this one
        code, err = (finish(start(*args, cwd=tmp_path))[::2]) if i == 0 else train_in_process(*args, cwd=tmp_path)
        assert code == 2 and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(head), (args, err)
    # a refused resume leaves the run as it was
    assert {run: {f: (run / f).read_bytes() for f in files} for run in (rf, dqn)} == before


def test_a_signal_after_the_last_batch_stops_the_evaluation_and_resume_finishes_it(tmp_path, monkeypatch):
    """SIGTERM during the last batch: the training completes (final row and checkpoint), the
    final evaluation does not start; ``resume=`` then runs only the evaluation, which plays
    exactly the games an uninterrupted run's evaluation played."""
    from dqnfast.agent.reinforce import PolicyLearner

    a, b = tmp_path / "a", tmp_path / "b"
    n = _learn(3000, a)["updates"]
    update = PolicyLearner.update

    def stopped_at_the_last(self, *args, **kwargs):
        m = update(self, *args, **kwargs)
        if self.num_updates == n:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler takes it
        return m

    monkeypatch.setattr(PolicyLearner, "update", stopped_at_the_last)
    summary = _learn(3000, b)
    monkeypatch.undo()
    assert summary["interrupted"] == "SIGTERM" and summary["stopped_in"] == "evaluation"
    assert summary["updates"] == n and not (b / "run" / "eval.json").exists()
    rows = (b / "run" / "metrics.csv").read_text()
    done = _learn(3000, b, resume=b / "run")
    assert done["stopped_in"] is None and (b / "run" / "metrics.csv").read_text() == rows  # evaluated only
    ea, eb = (json.loads((d / "run" / "eval.json").read_text()) for d in (a, b))
    assert ea["scores"] == eb["scores"] and ea["env_steps"] == eb["env_steps"]
