"""Fault injection on the run dir: second writers, resumes of live runs, forks, kills, interrupted evaluations.

Real processes of the real CLI (``python -m dqnfast.train``) on CartPole: a live run is held
still with SIGSTOP while other commands try to write into its folder (no timing races), runs
are killed with SIGKILL and resumed, SIGTERM lands in the final evaluation. Every refusal
must be one line on stderr with exit status 2 and leave the folders it touched byte for
byte as they were; every resume of a killed run must end exactly where the run that was
never stopped ends (``envs.resume=replay``, ``replay.save=true``: same metrics, same weights).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dqnfast.atomic import temp_path
from dqnfast.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
BASE = [
    "preset=cartpole",
    "algo.learning_starts=500",
    "algo.replay_ratio=8",
    "algo.batch_size=32",
    "logger.log_every=250",
    "logger.checkpoint_every=500",
    "logger.keep_checkpoints=2",
    "logger.progress=false",
    "envs.eval.episodes=2",
    "torch_threads=1",
    "envs.num_threads=1",
    "replay.num_threads=1",
    "envs.resume=replay",
    "replay.save=true",
]
TOTAL = 3000
COMPARED = ["env_steps", "episodes", "score_mean", "loss", "q_mean", "epsilon", "updates"]  # not sps, time
LOCK = ".dqnfast.lock"


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while STARTED:
        p = STARTED.pop()
        if p.poll() is None:
            p.kill()
            p.communicate()


def start(*args: str, cwd: Path) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-m", "dqnfast.train", *args],
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(p)
    return p


def finish(p: subprocess.Popen, timeout: float = 900) -> tuple[int, str]:
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def refused(p: subprocess.Popen | tuple[int, str], head: str, *parts: str) -> str:
    """Asserts the command (a process, or the status and stderr of an in-process run) was
    refused in one line starting with ``head``; returns the line."""
    code, err = finish(p) if isinstance(p, subprocess.Popen) else p
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert len(err.strip().splitlines()) == 1 and err.startswith(head), err
    assert all(x in err for x in parts), (parts, err)
    return err


def wait_for(cond, p: subprocess.Popen, what: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert p.poll() is None, f"the run ended before {what}: {p.communicate()[1][-3000:]}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def tree(run: Path) -> dict[str, str]:
    """sha256 of every file under ``run``, by relative path."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def same_run(a: Path, b: Path, *, up_to: int | None = None) -> None:
    """b's metrics and final weights are a's (rows up to ``up_to``; a's checkpoint of b's last step)."""
    ra = [r for r in rows(a) if up_to is None or int(r["env_steps"]) <= up_to]
    rb = rows(b)
    assert [r["env_steps"] for r in ra] == [r["env_steps"] for r in rb]
    for x, y in zip(ra, rb):
        assert {k: x[k] for k in COMPARED} == {k: y[k] for k in COMPARED}, (x, y)
    cb = load_checkpoint(b / "checkpoint.pt")
    ca = load_checkpoint(a / "checkpoints" / f"step_{cb['counters']['env_steps']:012d}.pt")
    for name in ("online", "target"):
        assert all(torch.equal(ca[name][k], cb[name][k]) for k in ca[name]), name
    for k, v in ca["optimizer"]["state"].items():
        assert all(torch.equal(v[n], cb["optimizer"]["state"][k][n]) for n in v)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, train_in_process) -> dict[str, Path]:
    """Two finished runs: ``ref`` (BASE, 3000 agent steps, never stopped) and ``other`` (seed 2, 1000 steps).

    Both through the CLI's entry point in this process: the runs that are killed, stopped and
    refused below are processes of their own.
    """
    tmp = tmp_path_factory.mktemp("finished")
    ref, other = tmp / "ref", tmp / "other"
    for args in (
        [f"algo.total_steps={TOTAL}", f"hydra.run.dir={ref}"],
        ["seed=2", "algo.total_steps=1000", f"hydra.run.dir={other}"],
    ):
        code, err = train_in_process(*BASE, *args, cwd=tmp)
        assert code == 0, err[-3000:]
    assert not (ref / LOCK).exists() and (ref / "eval.json").exists()
    return {"ref": ref, "other": other}


def test_a_running_runs_folder_refuses_every_other_writer(tmp_path, runs, train_in_process):
    live = tmp_path / "live"
    p = start(*BASE, "algo.total_steps=4000", f"hydra.run.dir={live}", cwd=tmp_path)
    wait_for(lambda: (live / "checkpoint.pt").exists() and text(live / "metrics.csv").count("\n") >= 4, p, "rows")
    os.kill(p.pid, signal.SIGSTOP)  # the live run holds its lock, frozen wherever it was
    try:
        assert json.loads((live / LOCK).read_text())["pid"] == p.pid
        # a write of the live run in progress: nobody but that run may remove it
        temp_path(live / "checkpoints" / "step_000000099999.pt", pid=4242).write_bytes(b"half a checkpoint")
        before = tree(live)
        fork = tmp_path / "fork"
        cases = [  # (command, the line's start)
            ([*BASE, f"hydra.run.dir={live}"], "error: hydra.run.dir: "),  # a second writer
            ([f"resume={live}", "algo.total_steps=5000"], "error: resume: "),  # a resume of the live run
            ([f"resume={runs['other']}", f"hydra.run.dir={live}", "algo.total_steps=5000"], "error: hydra.run.dir: "),
            ([f"resume={live}", f"hydra.run.dir={fork}", "algo.total_steps=5000"], "error: resume: "),  # its fork
        ]
        # the first in a process of its own, the others through the same entry point in this one
        for i, (args, head) in enumerate(cases):
            q = start(*args, cwd=tmp_path) if i == 0 else train_in_process(*args, cwd=tmp_path)
            refused(q, head, f"in use by a running dqnfast process (pid {p.pid} on host ", "dqnfast.train")
        assert tree(live) == before and not fork.exists()
    finally:
        os.kill(p.pid, signal.SIGCONT)
    code, err = finish(p)
    assert code == 0, err[-3000:]
    steps = [int(r["env_steps"]) for r in rows(live)]
    assert steps == sorted(set(steps)) and steps[-1] == 4000  # one writer's rows, in order
    assert load_checkpoint(live / "checkpoint.pt")["counters"]["env_steps"] == 4000
    assert (live / "eval.json").exists() and not (live / LOCK).exists()


def test_a_folder_that_holds_another_run_is_refused_and_left_byte_identical(tmp_path, runs, train_in_process):
    from dqnfast.config import ConfigError
    from dqnfast.training import train

    other, ref = runs["other"], runs["ref"]
    before = tree(other)
    cases = [
        ([f"resume={ref}", f"hydra.run.dir={other}", "algo.total_steps=4000"], "error: resume: ", "holds another run"),
        ([*BASE, f"hydra.run.dir={other}"], "error: hydra.run.dir: ", "already holds a run"),
        ([*BASE, "seed=2", "algo.total_steps=1000", f"hydra.run.dir={other}"], "error: hydra.run.dir: ", "resume="),
    ]
    for i, (args, head, part) in enumerate(cases):  # the first in a process of its own
        refused(start(*args, cwd=tmp_path) if i == 0 else train_in_process(*args, cwd=tmp_path), head, str(other), part)
    cfg = small(total_steps=4000)
    with pytest.raises(ConfigError, match="holds another run"):
        train(cfg, other, resume=ref)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, other)
    assert tree(other) == before


def _permissions_bind(probe: Path) -> list[str] | None:
    """A command prefix under which file permissions bind: none for a plain user; for root, capsh without
    CAP_DAC_OVERRIDE (root writes anywhere otherwise). None where neither works here."""
    if os.geteuid() != 0:
        return []
    capsh = shutil.which("capsh")
    if capsh is None:
        return None
    prefix = [capsh, "--drop=cap_dac_override", "--", "-c", 'exec "$0" "$@"']
    if subprocess.run([*prefix, "test", "-w", str(probe)]).returncode == 0:
        return None  # the capability could not be dropped (a container without it, say)
    return prefix


def test_a_run_dir_that_cannot_be_made_or_written_is_one_line_and_leaves_nothing(tmp_path, train_in_process):
    """A path under a regular file, a read-only folder and a new folder inside one: one line, exit 2,
    no folder left behind (they were tracebacks from the run dir's lock)."""
    (tmp_path / "afile").write_text("a file\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cases = [
        ([], "afile/run", "afile is a file, not a folder"),
        ([], "afile/run/deeper", "afile is a file, not a folder"),
    ]
    prefix = _permissions_bind(ro)
    if prefix is not None:
        cases += [(prefix, "ro", "Permission denied"), (prefix, "ro/new", "Permission denied")]
        cases += [(prefix, "ro/a/b", "Permission denied")]
    # processes of their own (the read-only cases need one: it drops a capability), but for the
    # second path under a file, which goes through the same entry point in this process
    procs = [
        subprocess.Popen(
            [*pre, sys.executable, "-m", "dqnfast.train", *BASE, f"hydra.run.dir={where}"],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if i != 1
        else train_in_process(*BASE, f"hydra.run.dir={where}", cwd=tmp_path)
        for i, (pre, where, _) in enumerate(cases)
    ]
    STARTED.extend(p for p in procs if isinstance(p, subprocess.Popen))
    for p, (_, where, why) in zip(procs, cases):
        line = refused(p, "error: hydra.run.dir: cannot create or write the run dir ", why)
        assert str(tmp_path / where) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "ro"] and not list(ro.iterdir())
    assert (tmp_path / "afile").read_text() == "a file\n"
    if prefix is None:
        pytest.skip("root without a way to drop CAP_DAC_OVERRIDE: the read-only cases cannot be made here")


def small(total_steps: int, **logger):
    """BASE as plain dataclasses (no Hydra), for runs in this process."""
    from test_training import cartpole

    cfg = cartpole(total_steps)
    return dataclasses.replace(
        cfg,
        envs=dataclasses.replace(cfg.envs, eval=dataclasses.replace(cfg.envs.eval, episodes=2, num_envs=2)),
        algo=dataclasses.replace(cfg.algo, learning_starts=500, batch_size=32, replay_ratio=8.0),
        logger=dataclasses.replace(cfg.logger, log_every=250, checkpoint_every=500, keep_checkpoints=10, **logger),
    )


def test_a_killed_run_resumes_to_exactly_the_run_never_stopped(tmp_path, runs, train_in_process):
    run = tmp_path / "run"
    p = start(*BASE, f"algo.total_steps={TOTAL}", f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(lambda: (run / "checkpoints" / "step_000000000500.pt").exists(), p, "a periodic checkpoint")
    p.kill()  # SIGKILL: no handler runs, the lock file stays behind, the OS drops the lock
    assert finish(p)[0] == -signal.SIGKILL
    assert json.loads((run / LOCK).read_text())["pid"] == p.pid
    # writes cut in half by the kill (the real files are intact: writes are atomic)
    cut = [
        temp_path(run / "checkpoint.pt", pid=4242),
        temp_path(run / "checkpoints" / "step_000000001000.pt", pid=4242),
    ]
    for f in cut:
        f.write_bytes(b"half a file")
    code, err = train_in_process(f"resume={run}", cwd=tmp_path)  # the CLI's entry point, in this process
    assert code == 0, err[-3000:]
    assert not any(f.exists() for f in cut) and not (run / LOCK).exists()
    same_run(runs["ref"], run)


def test_a_fork_carries_the_checkpoint_and_its_ring_and_never_writes_the_old_run(tmp_path, runs, train_in_process):
    old, inplace = tmp_path / "old", tmp_path / "inplace"
    shutil.copytree(runs["ref"], old)
    shutil.copytree(runs["ref"], inplace)
    before = tree(old)
    ring, refill = tmp_path / "fork_ring", tmp_path / "fork_refill"
    # the fork with its ring in a process of its own, the other two through the CLI's entry point in this one
    p = start(f"resume={old}", f"hydra.run.dir={ring}", "algo.total_steps=3500", cwd=tmp_path)
    for args in (
        [f"resume={old}", f"hydra.run.dir={refill}", "replay.save=false", "algo.total_steps=3500"],
        [f"resume={inplace}", "algo.total_steps=3500"],
    ):
        code, err = train_in_process(*args, cwd=tmp_path)
        assert code == 0, err[-3000:]
    code, err = finish(p)
    assert code == 0, err[-3000:]
    assert tree(old) == before  # with and without replay.save: not a byte of the old run changed
    log = (ring / "train.log").read_text()
    assert f"resume: forked {old} at {TOTAL} agent steps into {ring}" in log and "replay: reloaded" in log
    assert "refilled with 500 agent steps" in (refill / "train.log").read_text()
    same_run(inplace, ring)  # the fork continues the checkpoint's state exactly as a resume in place does
    history = rows(old)
    for fork in (ring, refill):
        c = load_checkpoint(fork / "checkpoint.pt")["counters"]
        assert c["env_steps"] == 3500 and c["resumes"] == 1
        assert rows(fork)[: len(history)] == history  # metrics.csv up to the checkpoint comes with the fork
        assert (fork / ".hydra" / "config.yaml").exists() and not (fork / LOCK).exists()


def test_sigterm_in_the_final_evaluation_then_resume_runs_only_the_evaluation(tmp_path, train_in_process):
    run = tmp_path / "run"
    p = start(*BASE, "algo.total_steps=1000", "envs.eval.episodes=100000", f"hydra.run.dir={run}", cwd=tmp_path)
    wait_for(lambda: "run total: 1000 agent steps" in text(run / "train.log"), p, "the final evaluation")
    p.send_signal(signal.SIGTERM)
    code, err = finish(p)
    assert code == 128 + signal.SIGTERM and "Traceback" not in err, err[-3000:]
    said = [x for x in (run / "train.log").read_text().splitlines() if "SIGTERM: stopped the final evaluation" in x]
    assert len(said) == 1 and "at 1000 agent steps" in said[0]
    assert f"finish the evaluation with: python -m dqnfast.train resume={run}" in said[0]
    assert not (run / "eval.json").exists()
    trained = {k: v for k, v in tree(run).items() if not k.startswith(".hydra") and k != "train.log"}

    # the resume and the refusal after it through the CLI's entry point in this process
    code, err = train_in_process(f"resume={run}", "envs.eval.episodes=3", cwd=tmp_path)
    assert code == 0, err[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["env_steps"] == 1000 and len(result["scores"]) == 3
    after = {k: v for k, v in tree(run).items() if k in trained}
    assert after == trained  # no training, no new checkpoint, no metrics row, no ring written
    log = (run / "train.log").read_text().split("evaluating only")
    assert len(log) == 2 and "refill" not in log[1] and "replay: " not in log[1]
    refused(train_in_process(f"resume={run}", cwd=tmp_path), "error: resume: ", "set algo.total_steps higher")


def test_a_resume_from_a_periodic_checkpoint_does_not_write_it_again(tmp_path, monkeypatch):
    import dqnfast.checkpoint
    from dqnfast.training import train

    save = dqnfast.checkpoint.save_run_checkpoint
    writes: list[int] = []

    def counted(run_dir, payload, *, env_steps, keep):
        writes.append(env_steps)
        return save(run_dir, payload, env_steps=env_steps, keep=keep)

    monkeypatch.setattr(dqnfast.checkpoint, "save_run_checkpoint", counted)
    train(small(1500), tmp_path)
    fresh = list(writes)
    writes.clear()
    train(small(2000), tmp_path, resume=tmp_path / "checkpoints" / "step_000000001000.pt")
    # each step's checkpoint once: none right after the resume, the last periodic one is the final one
    assert (fresh, writes) == ([500, 1000, 1500], [1500, 2000])


def test_stale_temporary_files_in_the_run_dir_and_under_checkpoints_go(tmp_path):
    from dqnfast.training import train

    (tmp_path / "checkpoints").mkdir()
    cut = [
        temp_path(tmp_path / "metrics.csv", pid=4242),
        temp_path(tmp_path / "checkpoints" / "step_000000000500.pt", pid=4242),
    ]
    for f in cut:
        f.write_bytes(b"half a file")  # left by a process killed mid-write
    assert train(small(600), tmp_path)["env_steps"] == 600
    assert not any(f.exists() for f in cut) and not (tmp_path / LOCK).exists()


def test_a_holder_refuses_in_process_runs_and_a_killed_holder_does_not_block(tmp_path):
    from dqnfast.config import ConfigError
    from dqnfast.training import train

    cut = temp_path(tmp_path / "checkpoints" / "step_000000000500.pt", pid=4242)
    cut.parent.mkdir()
    cut.write_bytes(b"a write in progress")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from dqnfast.training.rundir import acquire\n"
            f"acquire({str(tmp_path)!r}, refusal='run_dir: wait')\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    STARTED.append(holder)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"in use by a running dqnfast process \\(pid {holder.pid} "):
        train(small(600), tmp_path)
    assert cut.exists()  # a refused run cleans nothing
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK).exists()  # the killed holder's note stays; its lock is gone
    assert train(small(600), tmp_path)["env_steps"] == 600
    assert not cut.exists() and not (tmp_path / LOCK).exists()


KILL_AFTER = [
    ("step_000000000500.pt", "checkpoints"),
    ("step_000000001500.pt", "checkpoints"),
    ("step_000000002500.pt", "checkpoints"),
    ("replay_000000002000.npz", "."),
    ("run total: 3000 agent steps", "train.log"),
]


@pytest.mark.slow
@pytest.mark.parametrize("after,where", KILL_AFTER)
def test_kills_at_many_points_each_resume_to_the_run_never_stopped(tmp_path, runs, after, where):
    run = tmp_path / "run"
    p = start(*BASE, f"algo.total_steps={TOTAL}", f"hydra.run.dir={run}", cwd=tmp_path)
    if where == "train.log":
        wait_for(lambda: after in text(run / where), p, after)
    else:
        wait_for(lambda: (run / where / after).exists(), p, after)
    p.kill()
    assert finish(p)[0] == -signal.SIGKILL
    code, err = finish(start(f"resume={run}", cwd=tmp_path))
    assert code == 0, err[-3000:]
    same_run(runs["ref"], run)
    assert json.loads((run / "eval.json").read_text())["env_steps"] == TOTAL
