"""A sweep stopped part-way, then run again with the same command: the unfinished jobs continue, the finished are skipped.

One real sweep of three tiny CartPole jobs (basic launcher) is stopped by SIGUSR2, the
signal SLURM and submitit send before a job's time limit, while its second job trains;
the same command then runs again (``sweep_stopped_and_run_again``, once per module). The
tests read what the two commands printed and left. A sweep dir that holds runs of other
configs, and a single run into a sweep job's folder, are refused as before.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import pytest
from test_sweeps import report, sweep_command

from dqnfast.checkpoint import load_checkpoint

ARGS = [
    "preset=cartpole",
    "algo.total_steps=3000",
    "algo.learning_starts=200",
    "envs.eval.episodes=2",
    "envs.eval.num_envs=2",
    "logger.progress=false",
    "logger.log_every=100",
    "torch_threads=1",
]
SEEDS = "seed=0,1,2"


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (Hydra's ``.hydra/`` record too) with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sweep_stopped_and_run_again(tmp_path_factory) -> dict:
    """The sweep, stopped by SIGUSR2 once its job 1 logs its first metric row, then the same command again.

    Returns the sweep dir, the command, both commands' exit status and output, job 0's files
    as the first command left them, and what it left of jobs 1 and 2.
    """
    tmp = tmp_path_factory.mktemp("sweep_resume")
    cmd, env, sweep = sweep_command(tmp, SEEDS, base=ARGS)
    p = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = ""
    job1 = False
    for line in p.stdout:  # job 1 has its own 3000 agent steps ahead when its first row (100) is printed
        first += line
        job1 = job1 or "\t#1 : " in line
        if job1 and "steps/s" in line:
            p.send_signal(signal.SIGUSR2)
            break
    rest, first_err = p.communicate(timeout=600)
    job0 = snapshot(sweep / "0")
    left = {  # what the stopped sweep left: job 1's checkpoint, and whether jobs 1 and 2 got further
        "job1 steps": load_checkpoint(sweep / "1" / "checkpoint.pt")["counters"]["env_steps"],
        "job1 eval.json": (sweep / "1" / "eval.json").exists(),
        "job2": (sweep / "2").exists(),
    }
    again = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    return {
        "sweep": sweep,
        "cmd": cmd,
        "first": (p.returncode, first + rest, first_err),
        "again": (again.returncode, again.stdout, again.stderr),
        "job0": job0,
        "left": left,
    }


def test_sigusr2_stops_the_sweep_with_a_checkpoint_of_the_job_it_stopped(sweep_stopped_and_run_again):
    r = sweep_stopped_and_run_again
    sweep = r["sweep"]
    code, out, err = r["first"]
    assert code == 128 + signal.SIGUSR2 and "Traceback" not in err, err[-3000:]
    assert "eval.json" in r["job0"]
    steps = r["left"]["job1 steps"]
    assert 0 < steps < 3000 and not r["left"]["job1 eval.json"], r["left"]
    assert not r["left"]["job2"]  # the sweep stopped before its last job
    assert f"SIGUSR2: stopped at {steps} agent steps; checkpoint {sweep / '1' / 'checkpoint.pt'}" in out
    assert (
        f"sweep job 1: stopped by SIGUSR2; run the same sweep command with hydra.sweep.dir={sweep} to continue it"
        in out
    )


def test_the_same_command_again_skips_the_finished_job_continues_the_stopped_one_and_runs_the_rest(
    sweep_stopped_and_run_again,
):
    r = sweep_stopped_and_run_again
    sweep = r["sweep"]
    code, out, err = r["again"]
    assert code == 0 and not [x for x in err.splitlines() if x.startswith("error")], err[-3000:]
    ev0 = json.loads(r["job0"]["eval.json"])
    skipped = [x for x in out.splitlines() if "sweep job 0:" in x]
    assert len(skipped) == 1 and skipped[0].endswith(
        f"sweep job 0: finished already in {sweep / '0'} (CartPole-v1, 3000 agent steps; final evaluation: mean "
        f"score {ev0['mean']:.2f} over 2 games (random agent {ev0['random']['mean']:.2f})); skipped, nothing rerun"
    ), skipped
    now = snapshot(sweep / "0")
    log = now.pop("train.log")  # the job's log says it was skipped; no other byte of the job changed
    assert log.startswith(r["job0"]["train.log"]) and log.decode().endswith(skipped[0].split(" - ", 1)[1] + "\n")
    assert now == {k: v for k, v in r["job0"].items() if k != "train.log"}
    continued = [x for x in out.splitlines() if "sweep job 1:" in x]
    steps = int(continued[0].split("from checkpoint.pt (")[1].split(" of ")[0]) if continued else -1
    assert len(continued) == 1 and continued[0].endswith(
        f"sweep job 1: continuing its own run in {sweep / '1'} from checkpoint.pt ({steps} of 3000 agent steps done)"
    ), continued
    assert f"at {steps} agent steps" in out and "resume #1" in out
    for n in ("1", "2"):
        ck = load_checkpoint(sweep / n / "checkpoint.pt")
        assert ck["counters"]["env_steps"] == 3000 and ck["counters"]["resumes"] == (1 if n == "1" else 0)
        rows = list(csv.DictReader(open(sweep / n / "metrics.csv")))
        assert [int(x["env_steps"]) for x in rows] == list(range(100, 3001, 100))  # job 1: its rows, then the rest
        assert (sweep / n / "eval.json").is_file()
    rows = report(sweep)
    assert [(x["config"], x["seeds"], x["n"]) for x in rows] == [("default", "0 1 2", "3")]


def test_a_sweep_dir_holding_runs_of_another_config_refuses_the_sweep_before_any_job_runs(
    sweep_stopped_and_run_again, train_in_process
):
    """Another value for one key: one line naming the job, the folder and the key; not a file of the sweep changed."""
    r = sweep_stopped_and_run_again
    sweep = r["sweep"]
    before = snapshot(sweep)
    cmd = [a if a != SEEDS else "seed=0,1" for a in r["cmd"]] + ["optim.lr=1e-3,3e-4"]
    code, err = train_in_process(*cmd[3:], cwd=sweep.parent)
    assert code == 2 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line == (
        f"error: hydra.sweep.dir: {sweep / '1'} holds a run of another config (optim.lr: 0.001 -> 0.0003; seed: 1 -> 0), "
        f"not this job's; choose another hydra.sweep.dir for this sweep, or continue that run alone with "
        f"resume={sweep / '1'} (sweep job 1 of 4: seed=0 optim.lr=0.0003); no job of the sweep was run"
    )
    assert snapshot(sweep) == before


def test_a_single_run_into_a_sweep_jobs_folder_is_still_refused(sweep_stopped_and_run_again, train_in_process):
    """Only a sweep's job continues its own run: a plain run never writes over one without ``resume=``."""
    job = sweep_stopped_and_run_again["sweep"] / "0"
    before = snapshot(job)
    code, err = train_in_process(*ARGS, "seed=0", f"hydra.run.dir={job}", cwd=job.parent)
    assert code == 2 and err.strip() == (
        f"error: hydra.run.dir: {job} already holds a run (checkpoints up to 3000 agent steps); continue it with "
        f"resume={job}, or choose an empty run dir"
    )
    assert snapshot(job) == before


def test_a_job_continues_its_own_run_whatever_its_threads_device_or_logging():
    """Keys of how and where a job runs are not what makes it another job; the others are, each named."""
    from dqnfast.cli.sweep_resume import config_changes

    saved = {
        "seed": 1,
        "device": "auto",
        "torch_threads": 1,
        "envs": {"num_threads": 1, "num_envs": 4},
        "replay": {"num_threads": 1, "capacity": 50000},
        "logger": {"log_every": 500, "wandb": False},
        "optim": {"lr": 0.001},
        "network": {"mlp_hidden": [128, 128]},
        "resume": "/old/checkpoint.pt",
    }
    now = {
        "seed": 1,
        "device": "cuda",
        "torch_threads": None,
        "envs": {"num_threads": None, "num_envs": 4},
        "replay": {"num_threads": None, "capacity": 50000},
        "logger": {"log_every": 1000, "wandb": True},
        "optim": {"lr": 1e-3},
        "network": {"mlp_hidden": (128, 128)},
        "resume": None,
    }
    assert config_changes(saved, now) == []
    now.update(seed=2, optim={"lr": 3e-4}, network={"mlp_hidden": [64]}, game="Pong")
    assert config_changes(saved, now) == [
        "game: (absent) -> 'Pong'",
        "network.mlp_hidden: [128, 128] -> [64]",
        "optim.lr: 0.001 -> 0.0003",
        "seed: 1 -> 2",
    ]
    assert config_changes({"algo": {"double": True}}, {"algo": {"double": 1}}) == ["algo.double: True -> 1"]
