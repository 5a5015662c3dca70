"""Sweeps through the cluster launchers, for real: a running local Ray cluster, and submitit's local executor.

Marked ``cluster``: left out of the default ``pytest`` (and skipped without the plugins);
``.ci/run`` installs the ``cluster`` extra and runs them with ``pytest -m cluster``.

- Ray: ``ray start --head`` with this machine's cores (stopped afterwards, also when a test
  fails), then a sweep through the shipped ``hydra/launcher=ray_cluster``, which joins it
  (``address: auto``, found through ``RAY_ADDRESS``), one core and no GPU per job. One of its
  three jobs diverges: it is recorded as failed and the report lists it with its error,
  beside the other two jobs' results.
- submitit: ``hydra/launcher=submitit_local`` runs the SLURM code path (submitit's job
  arrays, pickled jobs, signal handlers and requeueing) as local processes. One job gets
  SIGUSR2 while it trains, as SLURM sends before a time limit: it checkpoints, submitit
  requeues it, and the requeued job continues from the checkpoint without ``resume=``.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweeps import check_job, has_plugin, job_dirs, sweep_command

from dqnfast.checkpoint import load_checkpoint
from dqnfast.report import md_text

pytestmark = pytest.mark.cluster
CORES = len(os.sched_getaffinity(0))


def run_report(sweep: Path) -> tuple[list[dict], str]:
    """``python -m dqnfast.report SWEEP`` as a user runs it: (report.csv rows, report.md)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
    )
    p = subprocess.run(
        [sys.executable, "-m", "dqnfast.report", str(sweep), "--reps", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return list(csv.DictReader(open(sweep / "report.csv"))), (sweep / "report.md").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster (``ray start --head``, this machine's cores, a small object store): its address.

    ``ray stop`` ends it after the module's tests, whatever happened (a start that failed half-way too).
    """
    if not has_plugin("hydra_ray_launcher"):
        pytest.skip("pip install -e '.[cluster]' (hydra-ray-launcher)")
    ray = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
        RAY_USAGE_STATS_ENABLED="0",
    )  # the workers import this checkout's dqnfast, as the jobs' launcher does
    try:
        start = subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                f"--num-cpus={CORES}",
                "--num-gpus=0",
                "--object-store-memory=100000000",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=300)


def test_a_sweep_on_a_running_ray_cluster_reports_every_job_and_the_failed_one_with_its_error(tmp_path, ray_cluster):
    cmd, env, sweep = sweep_command(
        tmp_path,
        "hydra/launcher=ray_cluster",
        "hydra.launcher.ray.remote.num_cpus=1",
        "hydra.launcher.ray.remote.num_gpus=0",
        "algo.max_grad_norm=null",
        "optim.lr=1e20,1e-3,3e-4",  # job 0 diverges
    )
    env["RAY_ADDRESS"] = ray_cluster  # what address: auto joins
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-3000:]
    said = proc.stderr + proc.stdout
    assert "Connecting to existing Ray cluster" in said and f"Using address {ray_cluster}" in said, said[-3000:]
    (outcome,) = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert outcome.startswith(
        "error: 1 of 3 sweep jobs failed (0: errors above, recorded in the jobs' failed.json); the other jobs ran"
    ), outcome
    jobs = job_dirs(sweep)
    assert [d.name for d in jobs] == ["0", "1", "2"]
    failure = json.loads((jobs[0] / "failed.json").read_text())
    assert failure["exit_code"] == 1 and failure["error"].startswith("training diverged")
    for d in jobs[1:]:
        check_job(d)
    for d in jobs:  # each job sized its threads to the one core Ray gave it
        assert f"threads: 1 core(s) for this job ({CORES} cores here)" in (d / "train.log").read_text()
    rows, md = run_report(sweep)
    assert [(r["config"], r["n"]) for r in rows] == [
        ("optim.lr=0.0003", "1"),
        ("optim.lr=0.001", "1"),
        ("optim.lr=1e+20", "0"),
    ]
    assert "3 jobs (2 with a final evaluation, 1 failed)" in md
    assert md_text(f"failed (exit 1): {failure['error']}") in md  # its one line, as the report's table writes it


def wait_for(what: str, found, p: subprocess.Popen, timeout: float = 300):
    """Polls ``found()`` until it returns something (that is returned), the sweep ends, or ``timeout`` s pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        got = found()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"{what}: not seen (sweep exit status {p.poll()})")


def _in_loop(log: Path) -> bool:
    try:
        return "steps/s" in log.read_text()
    except OSError:
        return False


def _holder_pid(lock: Path) -> int | None:
    try:
        return int(json.loads(lock.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None  # not written yet


@pytest.mark.skipif(not has_plugin("hydra_submitit_launcher"), reason="pip install -e '.[cluster]' (submitit)")
def test_a_submitit_job_stopped_by_sigusr2_is_requeued_and_continues_from_its_checkpoint(tmp_path):
    cmd, env, sweep = sweep_command(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        "seed=0,1",
        base=[
            "preset=cartpole",
            "algo.total_steps=3000",
            "algo.learning_starts=200",
            "envs.eval.episodes=2",
            "envs.eval.num_envs=2",
            "logger.progress=false",
            "logger.log_every=100",
        ],
    )
    with open(tmp_path / "sweep.out", "w") as out:
        p = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            job = sweep / "0"
            wait_for("job 0's first metric row", lambda: _in_loop(job / "train.log"), p)
            pid = wait_for("job 0's process", lambda: _holder_pid(job / ".dqnfast.lock"), p)
            os.kill(pid, signal.SIGUSR2)  # what SLURM sends before the time limit (submitit's --signal)
            assert p.wait(timeout=600) == 0, (tmp_path / "sweep.out").read_text()[-3000:]
        finally:
            if p.poll() is None:
                p.kill()
    log = (job / "train.log").read_text()
    stopped = [x for x in log.splitlines() if "SIGUSR2: stopped at" in x]
    assert len(stopped) == 1, log[-3000:]
    steps = int(stopped[0].split("stopped at ")[1].split()[0])
    assert 0 < steps < 3000
    assert "sweep job 0: checkpoint written; submitit's handler of SIGUSR2 takes over" in log
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log  # submitit's own handler ran
    assert f"sweep job 0: continuing its own run in {job} from checkpoint.pt ({steps} of 3000 agent steps done)" in log
    assert f"at {steps} agent steps" in log and "resume #1" in log
    ck = load_checkpoint(job / "checkpoint.pt")
    assert ck["counters"]["env_steps"] == 3000 and ck["counters"]["resumes"] == 1
    submitit_logs = "".join(f.read_text() for f in (sweep / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in submitit_logs
    for d in job_dirs(sweep):
        rows = list(csv.DictReader(open(d / "metrics.csv")))
        assert [int(r["env_steps"]) for r in rows] == list(range(100, 3001, 100))
        assert len(json.loads((d / "eval.json").read_text())["scores"]) == 2
    rows, md = run_report(sweep)
    assert [(r["config"], r["seeds"], r["n"]) for r in rows] == [("default", "0 1", "2")]


@pytest.mark.skipif(not has_plugin("hydra_submitit_launcher"), reason="pip install -e '.[cluster]' (submitit)")
def test_a_job_that_submitit_does_not_requeue_gets_a_failure_line_that_says_how_to_continue(tmp_path):
    """submitit's handler refuses to requeue a job that timed out too often: the job's line says so."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LocalJobEnvironment

    from dqnfast.cli.sweep_resume import hand_over_signal

    delayed = DelayedSubmission(print)
    delayed.set_timeout(0, 0)  # out of time, no requeue left
    handler = SignalHandler(LocalJobEnvironment(), JobPaths(tmp_path, "1"), delayed)
    old = signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    try:
        line = hand_over_signal("SIGUSR2", tmp_path / "sweep" / "3")
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert line == (
        "stopped by SIGUSR2 and not requeued (Job not requeued because: timed-out too many times.); its checkpoint "
        f"stays: run the sweep again with hydra.sweep.dir={tmp_path / 'sweep'} to continue it"
    )
