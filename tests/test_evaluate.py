"""dqnfast.evaluation, plots and video: the protocol, eval.json, PNGs, deterministic colour replay.

CLI tests run ``python -m dqnfast.evaluate`` in a subprocess: on a CartPole DQN agent and a
CartPole REINFORCE agent trained in the test (the whole train -> evaluate path), and, for
the video, on a Pong checkpoint of an untrained network with a short game cap (the replay
and the encoding are what is tested).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dqnfast.agent.actor import Actor
from dqnfast.agent.networks import make_network, spec_for
from dqnfast.checkpoint import write_checkpoint
from dqnfast.config import Config, ConfigError, EnvsConfig, EvalProtocolConfig
from dqnfast.envs import ActionLog, ReplayDivergedError, make_env
from dqnfast.evaluation import evaluate_network, format_table, play, run_episodes, summarize
from dqnfast.evaluation.protocol import recorded_games
from dqnfast.evaluation.results import POLICIES
from dqnfast.evaluation.video import replay_frames

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_module(module: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def pong_checkpoint(path: Path, *, seed: int = 3) -> Path:
    """A v2 checkpoint of an untrained Pong Nature CNN, as the trainer writes it (minus the loop state)."""
    torch.manual_seed(seed)
    spec = spec_for("auto", "pixels", (4, 84, 84), "uint8", 6, cnn_hidden=32)
    net = make_network(spec)
    cfg = dataclasses.asdict(Config(game="Pong", seed=seed))
    return write_checkpoint(
        path,
        {
            "online": net.state_dict(),
            "target": net.state_dict(),
            "optimizer": {},
            "counters": {"env_steps": 1234, "frames": 4936, "updates": 56, "episodes": 0, "seed": seed},
            "config": cfg,
            "game": "Pong-v5",
            "obs": {"kind": "pixels", "shape": [4, 84, 84], "dtype": "uint8"},
            "num_actions": 6,
            "network": spec.to_dict(),
        },
    )


# ------------------------------------------------------------------- library
def test_summary_and_table():
    s = summarize([1.0, 3.0, 2.0, 10.0], [5, 6, 7, 8])
    assert (s["episodes"], s["mean"], s["median"], s["min"], s["max"]) == (4, 4.0, 2.5, 1.0, 10.0)
    assert s["std"] == pytest.approx(np.std([1, 3, 2, 10]))
    result = {
        "game": "Pong-v5",
        "checkpoint": "ck.pt",
        "env_steps": 100,
        "frames": 400,
        "updates": 3,
        "protocol": {
            "episodes": 4,
            "num_envs": 2,
            "epsilon": 0.001,
            "seed": 0,
            "noop_max": 30,
            "repeat_action_probability": 0.25,
            "max_episode_steps": 27000,
            "max_episode_frames": 108000,
        },
        **s,
        "human_normalized": 0.7,
        "random": {**summarize([0.0, -1.0]), "human_normalized": 0.0},
        "reference": {"random": -20.7, "human": 14.6},
    }
    table = format_table(result)
    assert "|   trained |" not in table and "| trained |     4 |" in table and "|  random |     2 |" in table
    assert "sticky actions 0.25" in table and "108000 frames" in table and "0.700" in table


def test_random_baseline_shares_the_protocol_and_counts_each_game_once():
    envs = EnvsConfig(num_threads=1)
    protocol = EvalProtocolConfig(episodes=7, num_envs=3)
    net = make_network(spec_for("mlp", "vector", (4,), "float32", 2, mlp_hidden=(8,)))
    ev = evaluate_network(
        net, game="CartPole", obs="pixels", envs=envs, protocol=protocol, epsilon=0.001, seed=5, record=True
    )
    r = ev.result
    assert r["episodes"] == 7 and len(r["scores"]) == 7 and r["random"]["episodes"] == 7
    assert r["protocol"]["num_envs"] == 3 and r["protocol"]["seed"] == 5 and r["human_normalized"] is None
    assert r["scores"] == [float(n) for n in r["lengths"]]  # CartPole: +1 per step
    # the recording holds exactly the counted games: env i's first quota_i games (3, 2, 2)
    games = ev.trained.games
    assert sorted(g.score for g in games) == sorted(r["scores"])
    assert sorted((g.env, g.index) for g in games) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_colour_replay_is_the_game_that_was_played(tmp_path):
    """ALE is deterministic for a seed: re-playing env i's actions in a fresh one-env env seeded
    seed + i reproduces its frames byte for byte (grey 84x84, as the agent saw them) and its rewards,
    with sticky actions on; the colour replay then has 210x160x3 frames; a wrong record is refused."""
    envs, seed = EnvsConfig(num_threads=1), 11
    protocol = EvalProtocolConfig(episodes=3, num_envs=2, max_episode_steps=120, repeat_action_probability=0.25)
    env, spec = make_env("Breakout", "pixels", envs, protocol, seed=seed, num_envs=2, batch_size=2)
    rec = ActionLog(2, env=env, results=True)
    frames: list[list[np.ndarray]] = [[], []]
    rng = np.random.default_rng(0)
    rec.async_reset()
    for _ in range(300):
        obs, _, _, _, info = rec.recv()
        for j, e in enumerate(info["env_id"]):
            frames[e].append(obs[j, -1].copy())
        rec.send(rng.integers(0, spec.num_actions, 2).astype(np.int32), info["env_id"])
    rec.recv()
    config = dict(env.config)
    env.close()
    games = recorded_games(rec, [9, 9])
    g = next(g for g in games if g.env == 1 and g.index == 1)  # env 1's second game: needs a pre-roll
    args = ("Breakout-v5", config, rec, 1, g.start, g.stop)
    grey = replay_frames(*args, img_height=84, img_width=84, gray_scale=True, stack_num=4)
    assert grey.shape == (g.stop - g.start, 84, 84, 4) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., -1], np.stack(frames[1][g.start : g.stop]))
    colour = replay_frames(*args)
    assert colour.shape == (g.length + 1, 210, 160, 3) and colour.dtype == np.uint8
    assert len({c.tobytes() for c in colour}) > 10  # the screen moves
    rec.rewards[g.stop - 2, 1] += 1.0  # a record that is not what was played
    with pytest.raises(
        ReplayDivergedError, match=f"video: replaying env 1's recorded actions diverged at step {g.stop - 2}"
    ):
        replay_frames(*args)


def test_run_episodes_counts_each_game_once():
    env, spec = make_env("CartPole", "pixels", EnvsConfig(num_threads=1), EvalProtocolConfig(), seed=0, num_envs=3)
    try:
        actor = Actor(torch.nn.Linear(4, 2), 2, seed=0)
        scores, lengths = run_episodes(env, spec, actor, 0.5, episodes=5)
    finally:
        env.close()
    assert len(scores) == 5 and len(lengths) == 5
    assert scores == [float(n) for n in lengths]  # CartPole: +1 per agent step
    assert all(1 <= n <= 500 for n in lengths)


def test_play_uses_the_given_seed_per_env():
    envs, protocol = EnvsConfig(num_threads=1), EvalProtocolConfig(episodes=4, num_envs=2)
    a = play("CartPole", "pixels", envs, protocol, None, epsilon=1.0, seed=3)
    b = play("CartPole", "pixels", envs, protocol, None, epsilon=1.0, seed=3)
    assert a.scores == b.scores and a.epsilon == 1.0


# ------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def cartpole_run(cartpole_learned):
    """A CartPole agent trained by the real CLI (preset=cartpole, shared with tests/test_train.py):
    a run dir with metrics.csv and checkpoint.pt."""
    return cartpole_learned


def test_train_writes_eval_json_and_plots(cartpole_run):
    ev = json.loads((cartpole_run / "eval.json").read_text())
    assert ev["game"] == "CartPole-v1" and ev["env_steps"] == 60_000 and len(ev["scores"]) == 10
    assert ev["random"]["episodes"] == 10 and ev["protocol"]["epsilon"] == 0.0
    assert ev["protocol"]["policy"] == POLICIES["dqn"] and ev["run_dir"] == str(cartpole_run)
    assert Path(ev["plots"]["learning_curve"]) == cartpole_run / "learning_curve.png" and ev["video"] is None
    for name in ("eval_scores.png", "learning_curve.png"):
        check_png(cartpole_run / name)


def test_cli_evaluates_trained_vs_random(cartpole_run):
    proc = run_module("dqnfast.evaluate", f"run={cartpole_run}", "episodes=12", "num_envs=4", cwd=cartpole_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = cartpole_run / "eval"
    ev = json.loads((out / "eval.json").read_text())
    for key in (
        "mean",
        "std",
        "median",
        "min",
        "max",
        "scores",
        "lengths",
        "protocol",
        "checkpoint",
        "env_steps",
        "random",
        "human_normalized",
        "plots",
        "video",
    ):
        assert key in ev, key
    assert len(ev["scores"]) == 12 and len(ev["random"]["scores"]) == 12
    assert ev["min"] <= ev["median"] <= ev["max"] and ev["mean"] == pytest.approx(np.mean(ev["scores"]))
    assert ev["std"] == pytest.approx(np.std(ev["scores"]))
    assert ev["protocol"]["epsilon"] == 0.0 and ev["protocol"]["episodes"] == 12  # preset=cartpole's eval_epsilon
    assert ev["env_steps"] == 60_000 and ev["checkpoint"] == str((cartpole_run / "checkpoint.pt").resolve())
    assert ev["mean"] > ev["random"]["mean"]  # the trained agent beats random play
    assert "| trained |    12 |" in proc.stdout and "|  random |    12 |" in proc.stdout
    for name in ("eval_scores.png", "learning_curve.png"):
        check_png(out / name)
    train = json.loads((cartpole_run / "eval.json").read_text())  # one builder: the same layout
    assert list(ev) == [k for k in list(train) if k not in ("plots", "video")] + ["time", "dqnfast", "plots", "video"]
    assert ev["protocol"].keys() == train["protocol"].keys()


@pytest.fixture(scope="module")
def reinforce_run(reinforce_finished):
    """A CartPole REINFORCE policy trained by the real CLI (3000 agent steps; its final
    evaluation: 4 games on 2 envs), shared with tests/test_reinforce.py: its run dir."""
    return reinforce_finished


def test_cli_evaluates_a_reinforce_policy_greedily(reinforce_run):
    proc = run_module("dqnfast.evaluate", f"run={reinforce_run}", "episodes=4", "num_envs=2", cwd=reinforce_run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads((reinforce_run / "eval" / "eval.json").read_text())
    assert ev["protocol"]["policy"] == POLICIES["reinforce"] and ev["protocol"]["epsilon"] == 0.0  # the preset's
    assert len(ev["scores"]) == 4 and len(ev["random"]["scores"]) == 4 and ev["env_steps"] >= 3000
    # the same protocol and seeds as the run's own final evaluation, greedy: the same games, so
    # the rebuilt policy is the trained one
    train = json.loads((reinforce_run / "eval.json").read_text())
    assert train["protocol"]["policy"] == POLICIES["reinforce"] and ev["scores"] == train["scores"]
    assert ev["random"]["scores"] == train["random"]["scores"]
    assert "| trained |     4 |" in proc.stdout and "greedy policy (argmax of the logits)" in proc.stdout
    for name in ("eval_scores.png", "learning_curve.png"):
        check_png(reinforce_run / "eval" / name)


def test_a_reinforce_checkpoint_for_another_game_is_refused(reinforce_run, tmp_path):
    from dqnfast.evaluation import EvalConfig, evaluate

    with pytest.raises(ConfigError, match="checkpoint is for CartPole-v1, this evaluation is Acrobot-v1"):
        evaluate(EvalConfig(run=str(reinforce_run), game="Acrobot", episodes=1, out=str(tmp_path)), echo=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("hidden, value", [([], True), ([16, 8], False)])
def test_policy_network_is_rebuilt_from_its_weights(hidden, value):
    from dqnfast.agent.reinforce import PolicyNetwork
    from dqnfast.evaluation.agents import policy_network

    torch.manual_seed(0)
    net = PolicyNetwork(4, 3, hidden, value=value)
    rebuilt = policy_network(net.state_dict(), 4, 3, task_id="X-v1")
    x = torch.randn(5, 4)
    torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)
    assert (rebuilt.value_head is not None) == value
    with pytest.raises(
        ConfigError, match=r"takes float32\[4\] and has 3 actions, this evaluation's X-v1 gives float32\[6\]"
    ):
        policy_network(net.state_dict(), 6, 3, task_id="X-v1")


def test_cli_video_and_gif_of_a_pong_game(tmp_path):
    imageio = pytest.importorskip("imageio.v2", reason="videos need imageio and imageio-ffmpeg")
    pytest.importorskip("imageio_ffmpeg", reason="videos need imageio-ffmpeg")

    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    proc = run_module(
        "dqnfast.evaluate",
        f"run={ck.parent}",
        "episodes=2",
        "num_envs=2",
        "max_episode_steps=60",
        "video=true",
        "gif=true",
        "video_episode=first",
        "plots=false",
        "random_baseline=false",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = json.loads((ck.parent / "eval" / "eval.json").read_text())
    v = ev["video"]
    assert v["length"] == 60 and v["frames"] == 61 and v["shape"] == [210, 160, 3] and v["fps"] == 15.0
    assert v["score"] == ev["scores"][0] or v["score"] in ev["scores"]
    assert f"score{v['score']:g}" in Path(v["mp4"]).name and ev["random"] is None
    reader = imageio.get_reader(v["mp4"])
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 61 and frames[0].shape == (210, 160, 3) and frames[0].dtype == np.uint8
    assert frames[0].mean() > 20  # a colour picture, not black
    gif = imageio.mimread(v["gif"])
    assert 1 < len(gif) <= 61 and gif[0].shape[:2] == (210, 160)  # GIF merges identical consecutive frames


@pytest.mark.parametrize("eval_epsilon", [0.05, 0.2])
def test_evaluate_defaults_to_the_runs_final_evaluation_epsilon(tmp_path, eval_epsilon):
    from dqnfast.checkpoint import load_checkpoint
    from dqnfast.evaluation import EvalConfig, evaluate

    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    if eval_epsilon != 0.05:  # a run with its own explore.eval_epsilon
        payload = load_checkpoint(ck)
        payload["config"]["explore"]["eval_epsilon"] = eval_epsilon
        write_checkpoint(ck, payload)
    cfg = EvalConfig(
        run=str(ck), episodes=1, num_envs=1, max_episode_steps=20, random_baseline=False, plots=False, device="cpu"
    )
    ev = evaluate(cfg, tmp_path / "out", echo=False)
    # the same epsilon as train's final evaluation (Config().explore.eval_epsilon, 0.05 by default)
    assert ev["epsilon"] == eval_epsilon and ev["protocol"]["epsilon"] == eval_epsilon
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["epsilon"] == eval_epsilon and saved["protocol"]["episodes"] == 1
    assert Config().explore.eval_epsilon == 0.05


def test_evaluate_logs_games_done_per_agent_the_video_and_the_table_to_the_log_file(tmp_path, caplog):
    import logging

    from dqnfast.evaluation import EvalConfig, evaluate

    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    log_file = logging.FileHandler(tmp_path / "evaluate.log")  # as Hydra's job logging adds it
    logging.getLogger().addHandler(log_file)
    caplog.set_level(logging.INFO, logger="dqnfast.evaluate")
    try:
        cfg = EvalConfig(run=str(ck), episodes=4, num_envs=2, max_episode_steps=20, plots=False, device="cpu", gif=True)
        evaluate(cfg, tmp_path / "out", echo=False)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "dqnfast.evaluate"]
    for agent in ("trained agent", "random agent"):
        assert f"{agent}: 4/4 games" in lines, lines
    assert any(line.startswith("writing the GIF of the best trained game") for line in lines), lines
    assert "| trained |     4 |" in (tmp_path / "evaluate.log").read_text()


def test_refused_evaluation_leaves_no_output_folder(tmp_path, monkeypatch, capsys):
    from dqnfast.cli.evaluate import cli

    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dqnfast.evaluate", f"run={ck.parent}", "epsilon=2"])
    with pytest.raises(SystemExit) as e:
        cli()
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: epsilon: ")
    assert sorted(p.name for p in ck.parent.iterdir()) == ["checkpoint.pt"]  # no eval/


def test_cli_errors_are_one_line(tmp_path, evaluate_in_process):
    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.pt").write_bytes(ck.read_bytes()[:5000])
    cases = [
        (
            [f"run={ck.parent}", "game=Breakout"],
            "error: run: checkpoint is for Pong-v5, this evaluation is Breakout-v5",
        ),
        ([f"run={tmp_path / 'cut'}"], "error: run: checkpoint"),
        ([f"run={ck.parent}", "noop_max=0"], "error: noop_max: must be >= 1"),  # envpool would crash
        ([f"run={tmp_path / 'nothing'}"], "error: run: no run dir or checkpoint file"),
        (["episodes=3"], "error: run: give the run dir"),
        (  # a sweep's folder: the runs in it that can be evaluated, and how
            [f"run={tmp_path / 'sweep'}"],
            f"error: run: {tmp_path / 'sweep'} is a folder of runs, not a run (no checkpoint of its own); the 2 "
            f"run(s) in it with a checkpoint: {tmp_path / 'sweep' / '0'}, {tmp_path / 'sweep' / '10'}; "
            f"evaluate one with: python -m dqnfast.evaluate run={tmp_path / 'sweep' / '0'}",
        ),
    ]
    for job in ("0", "10"):
        (tmp_path / "sweep" / job).mkdir(parents=True)
        (tmp_path / "sweep" / job / "checkpoint.pt").write_bytes(ck.read_bytes())
    (tmp_path / "sweep" / "2" / ".hydra").mkdir(parents=True)  # a job that wrote no checkpoint
    for i, (args, expect) in enumerate(cases):
        # the first in a process of its own, the others through the same entry point in this one
        if i == 0:
            p = run_module("dqnfast.evaluate", *args, cwd=tmp_path, timeout=120)
            code, err = p.returncode, p.stderr
        else:
            code, err = evaluate_in_process(*args, cwd=tmp_path)
        assert code == 2 and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(expect), (args, err)
    assert not (tmp_path / "cut" / "eval").exists()  # refused before Hydra made a folder


def test_a_refused_evaluation_leaves_the_previous_evaluation_as_it_was(tmp_path, evaluate_in_process):
    """Refusals found only once the checkpoint and the game are known come before Hydra writes the record.

    The first refusal is a process of its own; the evaluation and the other refusals go
    through the same entry point in this process."""
    ck = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    first = ["episodes=1", "num_envs=1", "max_episode_steps=20", "random_baseline=false", "plots=false"]
    code, err = evaluate_in_process(f"run={ck.parent}", *first, cwd=tmp_path)
    assert code == 0, err[-3000:]
    out = ck.parent / "eval"

    def snapshot() -> dict:
        return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    before = snapshot()
    assert Path(".hydra/overrides.yaml") in before and Path("eval.json") in before
    run = f"run={ck.parent}"
    refused = [[run, "game=NoSuchGame"], [run, "game=Breakout"], [run, "epsilon=2"], ["-m", run, "game=Pong,Breakout"]]
    for i, args in enumerate(refused):
        if i == 0:
            p = run_module("dqnfast.evaluate", *args, cwd=tmp_path, timeout=120)
            code, err = p.returncode, p.stderr
        else:
            code, err = evaluate_in_process(*args, cwd=tmp_path)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (args, err)
    assert snapshot() == before  # the first evaluation's record and log, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pong"]  # and no folder elsewhere
