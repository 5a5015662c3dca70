"""Checkpoints and resume through the real CLI: SIGTERM mid-run, resume, exact continuation.

With ``envs.resume=replay`` (the envs are restored by re-playing the recorded actions from
the same seed) and ``replay.save=true`` (the ring and its sampler state come back), a run
stopped by SIGTERM at an arbitrary step and resumed computes the same updates as a run that
was never stopped: the same losses, Q-values, scores, epsilons in metrics.csv and the same
final weights, bit for bit (CPU, one torch thread). The default ``envs.resume=reseed``
without a saved ring is checked for what it promises: counters and schedules continue,
the ring is refilled with ``learning_starts`` steps of the agent's epsilon-greedy policy, metrics.csv is appended to.
A run stopped in its random warm-up keeps its ring even without ``replay.save``, so its resume
goes on with the warm-up where it stopped.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dqnfast.agent.actor import linear_epsilon
from dqnfast.checkpoint import load_checkpoint
from dqnfast.config import (
    AlgoConfig,
    Config,
    EnvsConfig,
    EvalProtocolConfig,
    LoggerConfig,
    ReplayConfig,
)

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
BASE = [
    "preset=cartpole",
    "algo.learning_starts=500",
    "algo.replay_ratio=8",
    "algo.batch_size=32",
    "logger.log_every=250",
    "logger.progress=false",
    "envs.eval.episodes=2",
    "torch_threads=1",
    "envs.num_threads=1",
    "replay.num_threads=1",
]
EXACT = ["envs.resume=replay", "replay.save=true"]
RAINBOW_HEAD = [
    "algo.distributional=c51",
    "algo.v_min=0",
    "algo.v_max=100",
    "network.noisy=true",
    "network.dueling=true",
]
COMPARED = [
    "env_steps",
    "frames",
    "episodes",
    "score_mean",
    "score_median",
    "episode_length_mean",
    "loss",
    "q_mean",
    "epsilon",
    "updates",
]  # all but sps and time


def start(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dqnfast.train", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# rainbow: prioritized replay with C51's head, noisy layers and the dueling head (priorities from the
# cross-entropy, the noise's generator in the checkpoint); beta0=1 holds beta at 1, since beta anneals
# over algo.total_steps, which differs between the two runs (and changes at the resume); the
# priorities and weights still vary
# uniform replay is slow here: the default run checks its exact resume after SIGKILL
# (test_fault_injection.py) and after SIGTERM inside an update burst (test_limits.py)
@pytest.mark.parametrize(
    "replay",
    [pytest.param([], marks=pytest.mark.slow), ["replay.prioritized=true", "replay.beta0=1.0", *RAINBOW_HEAD]],
    ids=["uniform", "rainbow"],
)
def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, replay, train_in_process):
    """With prioritized replay the ring file carries the priorities and the checkpoint the one
    priority report not applied yet, so the resumed run draws the same batches too.

    The run that is stopped is a process of its own; the run never stopped and the resume go
    through the CLI's entry point in this process."""
    a, b = tmp_path / "a", tmp_path / "b"
    # B: stopped by SIGTERM once learning is under way, then resumed
    proc = start(
        *BASE,
        *EXACT,
        *replay,
        "algo.total_steps=1000000",
        "logger.checkpoint_every=0",
        f"hydra.run.dir={b}",
        cwd=tmp_path,
    )
    deadline = time.time() + 600  # a wait, not a bound: a busy machine starts the run late
    while time.time() < deadline and proc.poll() is None:
        if (b / "metrics.csv").exists() and len(rows(b)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    said = [x for x in (b / "train.log").read_text().splitlines() if "SIGTERM: stopped at" in x]
    assert "Traceback" not in err and len(said) == 1 and f"resume={b}" in said[0]
    ck = load_checkpoint(b / "checkpoint.pt")
    stopped = ck["counters"]["env_steps"]
    assert 750 <= stopped < 5000 and stopped % 4 == 0
    assert ck["envs"]["actions"].shape == (stopped // 4, 4)  # one recorded action per env and step
    assert (b / f"replay_{stopped:012d}.npz").exists() and not (b / "eval.json").exists()
    assert all(int(r["env_steps"]) <= stopped for r in rows(b))  # no row written at the interruption

    total = (stopped // 500 + 2) * 500  # a multiple of 4 envs and of log_every, <= 6000
    code, err = train_in_process(f"resume={b}", f"algo.total_steps={total}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    log = (b / "train.log").read_text()
    assert f"resume: changed algo.total_steps: 1000000 -> {total}" in log
    assert f"at {stopped} agent steps" in log and "replay: reloaded" in log and "envs: restored by replaying" in log
    assert list(b.glob(".hydra/resume-*/overrides.yaml"))  # the run's own .hydra/ is kept
    # A: the same run never stopped, a numbered checkpoint every 500 steps to compare weights with
    code, err = train_in_process(
        *BASE,
        *EXACT,
        *replay,
        "algo.total_steps=6000",
        "logger.checkpoint_every=500",
        "logger.keep_checkpoints=100",
        f"hydra.run.dir={a}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]

    ra, rb = [r for r in rows(a) if int(r["env_steps"]) <= total], rows(b)
    assert [int(r["env_steps"]) for r in rb] == [int(r["env_steps"]) for r in ra]
    assert rb[-1]["env_steps"] == str(total) and float(rb[-1]["loss"]) > 0
    for x, y in zip(ra, rb):
        assert {k: x[k] for k in COMPARED} == {k: y[k] for k in COMPARED}  # exactly: same floats, same text
    ca, cb = load_checkpoint(a / "checkpoints" / f"step_{total:012d}.pt"), load_checkpoint(b / "checkpoint.pt")
    assert {k: v for k, v in ca["counters"].items() if k != "resumes"} == {
        k: v for k, v in cb["counters"].items() if k != "resumes"
    }
    assert cb["counters"]["resumes"] == 1 and ca["epsilon"] == cb["epsilon"]
    for name in ("online", "target"):
        for k in ca[name]:
            assert torch.equal(ca[name][k], cb[name][k]), (name, k)
    for k, v in ca["optimizer"]["state"].items():
        assert all(torch.equal(v[n], cb["optimizer"]["state"][k][n]) for n in v)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished CartPole run of 1500 agent steps, checkpoints every 500, the newest 2 kept (~5 s)."""
    tmp = tmp_path_factory.mktemp("finished")
    code, _, err = finish(
        start(
            *BASE,
            "algo.total_steps=1500",
            "logger.checkpoint_every=500",
            "logger.keep_checkpoints=2",
            f"hydra.run.dir={tmp / 'run'}",
            cwd=tmp,
        )
    )
    assert code == 0, err[-3000:]
    return tmp / "run"


def test_default_resume_reseeds_refills_and_continues_the_counters(finished_run, tmp_path, train_in_process):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    ck1 = load_checkpoint(run / "checkpoint.pt")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000001000.pt", "step_000000001500.pt"]
    # the CLI's entry point in this process (the finished run was a process of its own)
    code, err = train_in_process(f"resume={run}", "algo.total_steps=2500", cwd=tmp_path)
    assert code == 0, err[-3000:]
    log = (run / "train.log").read_text()
    assert "the ring starts empty and is refilled with 500 agent steps (what it held at the checkpoint, up to " in log
    assert "envs: re-created with seed 1000001 (envs.resume=reseed)" in log
    ck2 = load_checkpoint(run / "checkpoint.pt")
    c1, c2 = ck1["counters"], ck2["counters"]
    assert c2["env_steps"] == 2500 and c2["refill_steps"] == 500 and c2["resumes"] == 1
    # one update per 4 agent steps before and after: the refill adds no updates and no steps
    assert c2["updates"] - c1["updates"] == pytest.approx((2500 - 1500) * 8 / 32, abs=1)
    assert c2["episodes"] > c1["episodes"]
    r = rows(run)
    steps = [int(x["env_steps"]) for x in r]
    assert steps == sorted(set(steps)) and len(steps) == 10 and 1500 in steps and steps[-1] == 2500  # appended
    for x in r:  # the schedule continues from the checkpoint's step (cartpole: 1 -> 0.05 over 10k); a row
        # shows the epsilon of the last actions, chosen 4 agent steps (one per env) before the row's count
        assert float(x["epsilon"]) == pytest.approx(linear_epsilon(int(x["env_steps"]) - 4, 1.0, 0.05, 10_000, 500))
    assert [int(x["updates"]) for x in r] == sorted(int(x["updates"]) for x in r)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000002000.pt", "step_000000002500.pt"]


def test_bad_checkpoints_are_refused_in_one_line(finished_run, tmp_path, train_in_process):
    from test_checkpoint import flip_tensor_byte
    from test_evaluate import pong_checkpoint

    run = finished_run
    data = (run / "checkpoint.pt").read_bytes()
    for name in ("cut", "flip"):
        (tmp_path / name).mkdir()
    (tmp_path / "cut" / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    flip_tensor_byte(run / "checkpoint.pt", tmp_path / "flip" / "checkpoint.pt")
    pong = pong_checkpoint(tmp_path / "pong" / "checkpoint.pt")
    cases = [
        ([f"resume={tmp_path / 'cut'}"], "error: resume: checkpoint", "is truncated or corrupt"),
        ([f"resume={tmp_path / 'flip'}"], "error: resume: checkpoint", "is corrupt (checksum mismatch"),
        (
            [f"resume={pong.parent}", "game=Breakout"],
            "error: resume: checkpoint is for Pong-v5, this run is Breakout-v5",
            "",
        ),
        (
            [f"resume={run}", "network.mlp_hidden=[64]", "algo.total_steps=9000"],
            "error: resume: checkpoint network is mlp hidden [128, 128] on float32[4], this run's is mlp hidden [64]",
            "",
        ),
    ]
    # the first in a process of its own, the others through the same entry point in this one
    for i, (args, head, part) in enumerate(cases):
        code, err = finish(start(*args, cwd=tmp_path))[::2] if i == 0 else train_in_process(*args, cwd=tmp_path)
        assert code == 2 and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith(head) and part in err, (args, err)
    assert not list((tmp_path / "cut").glob(".hydra*"))  # refused before Hydra wrote into the run dir


def _snapshot(d: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in d.rglob("*")
        if p.is_file()
    }


def test_a_resume_through_a_symlinked_checkpoint_writes_only_into_its_own_folder(
    finished_run, tmp_path, train_in_process
):
    """``B/checkpoint.pt -> A/checkpoint.pt``: resume=B continues in B, never writes into A through the link
    (the resume through the CLI's entry point in this process)."""
    a, b = tmp_path / "A", tmp_path / "B"
    shutil.copytree(finished_run, a)
    b.mkdir()
    (b / "checkpoint.pt").symlink_to(a / "checkpoint.pt")
    was = _snapshot(a)
    code, err = train_in_process(f"resume={b}", "algo.total_steps=2000", cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert _snapshot(a) == was
    assert not (b / "checkpoint.pt").is_symlink()
    assert load_checkpoint(b / "checkpoint.pt")["counters"]["env_steps"] == 2000
    assert (b / "checkpoints" / "step_000000002000.pt").is_file() and (b / "eval.json").is_file()


def test_a_second_signal_exits_at_once(tmp_path):
    script = (
        "import os, signal, time\n"
        "from dqnfast.training import GracefulStop\n"
        "with GracefulStop() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.1)\n"
        "    assert stop.signum == signal.SIGINT, stop.signum\n"
        "    print('first signal: flag set', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "print('not reached')\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 128 + signal.SIGINT and "first signal: flag set" in p.stdout
    assert "not reached" not in p.stdout and "SIGINT again: exiting now, without a checkpoint" in p.stderr


# ------------------------------------------------------------------ a stop in the warm-up
def warm_up_run(total_steps: int, envs_resume: str = "reseed") -> Config:
    """CartPole with 2000 agent steps of random warm-up and the default replay.save=false."""
    return Config(
        game="CartPole",
        device="cpu",
        torch_threads=1,
        envs=EnvsConfig(num_envs=4, num_threads=1, resume=envs_resume, eval=EvalProtocolConfig(episodes=1, num_envs=1)),
        algo=AlgoConfig(total_steps=total_steps, learning_starts=2000, batch_size=32, replay_ratio=8),
        replay=ReplayConfig(capacity=8000, num_threads=1),
        logger=LoggerConfig(log_every=500, checkpoint_every=0, progress=False),
    )


def stop_at_act(monkeypatch, call: int) -> None:
    """SIGTERM, taken by the run's own handler, at the ``call``-th action choice (one per loop iteration)."""
    from dqnfast.agent.actor import Actor

    act, calls = Actor.act, [0]

    def act_then_stop(self, obs, epsilon):
        calls[0] += 1
        if calls[0] == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return act(self, obs, epsilon)

    monkeypatch.setattr(Actor, "act", act_then_stop)


def test_a_run_stopped_in_its_warm_up_continues_it_exactly(tmp_path, monkeypatch, caplog):
    """Without replay.save, a checkpoint in the warm-up keeps the ring it has filled (only the slots it
    holds): the exact resume (envs.resume=replay) goes on from there and equals a run never stopped."""
    import numpy as np

    from dqnfast.training import train

    a, b = tmp_path / "a", tmp_path / "b"
    train(warm_up_run(3000, "replay"), a)
    stop_at_act(monkeypatch, 300)
    summary = train(warm_up_run(3000, "replay"), b)
    monkeypatch.undo()
    stopped = summary["env_steps"]
    assert summary["interrupted"] == "SIGTERM" and 0 < stopped < 2000
    ck = load_checkpoint(b / "checkpoint.pt")
    assert ck["replay"]["file"] == f"replay_{stopped:012d}.npz" and ck["replay"]["filling"]
    with np.load(b / ck["replay"]["file"]) as z:
        assert z["frames"].shape[:2] == (4, stopped // 4)  # what the warm-up stored, not the ring's 2000 per env

    caplog.set_level("INFO", logger="dqnfast.train")
    done = train(warm_up_run(3000, "replay"), b, resume=b)
    assert done["env_steps"] == 3000 and done["stopped_in"] is None
    assert f"replay: reloaded {ck['replay']['file']}" in caplog.text and "refill" not in caplog.text
    cb, ca = load_checkpoint(b / "checkpoint.pt"), load_checkpoint(a / "checkpoint.pt")
    assert cb["counters"]["refill_steps"] == 0 and cb["counters"]["updates"] == ca["counters"]["updates"]
    assert rows(b) and [{k: r[k] for k in COMPARED} for r in rows(b)] == [{k: r[k] for k in COMPARED} for r in rows(a)]
    assert all(torch.equal(ca["online"][k], cb["online"][k]) for k in ca["online"])
    assert not (b / ck["replay"]["file"]).exists()  # learning has begun: replay.save=false keeps no ring


def test_without_its_ring_a_warm_up_resume_refills_only_what_the_ring_held(tmp_path, monkeypatch, caplog):
    """A warm-up checkpoint whose ring is gone refills what the ring held (not algo.learning_starts),
    and a stop during that refill keeps the refill's progress: the steps played always count."""
    from dqnfast.training import train

    stop_at_act(monkeypatch, 300)
    stopped = train(warm_up_run(3000), tmp_path)["env_steps"]
    monkeypatch.undo()
    ring = tmp_path / f"replay_{stopped:012d}.npz"
    ring.unlink()  # as a checkpoint of an older version, which saved no warm-up ring
    caplog.set_level("INFO", logger="dqnfast.train")

    stop_at_act(monkeypatch, 100)  # inside the refill of `stopped` steps
    summary = train(warm_up_run(3000), tmp_path, resume=tmp_path)
    monkeypatch.undo()
    assert summary["interrupted"] == "SIGTERM" and summary["env_steps"] == stopped
    assert f"refilled with {stopped} agent steps (what it held at the checkpoint, up to algo.learning_starts=2000)" in (
        caplog.text
    )
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    left = ck["loop"]["refill_left"]
    assert ck["replay"]["filling"] and left == stopped - 100 * 4 and ck["counters"]["refill_steps"] == 400

    done = train(warm_up_run(3000), tmp_path, resume=tmp_path)
    assert done["env_steps"] == 3000 and done["stopped_in"] is None
    assert f"its refill goes on: {left} agent steps left before the warm-up goes on" in caplog.text
    assert load_checkpoint(tmp_path / "checkpoint.pt")["counters"]["refill_steps"] == stopped  # not one step again
