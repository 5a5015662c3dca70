"""Hydra multirun sweeps of the real CLI: basic and joblib launchers, the Optuna sweeper, the report.

Every sweep is a few tiny CartPole jobs (2000 agent steps, two evaluation games) run
through ``python -m dqnfast.train -m`` in a subprocess, then ``python -m dqnfast.report``.
The cluster launcher configs (SLURM via submitit, Ray) are composed, not launched; the
submitit plugin's local executor runs a real sweep in the slow suite.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dqnfast.cli import CONF_DIR
from dqnfast.config.resolve import job_cores

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "preset=cartpole",
    "algo.total_steps=2000",
    "algo.learning_starts=500",
    "envs.eval.episodes=2",
    "envs.eval.num_envs=2",
    "logger.progress=false",
    "logger.log_every=500",
]


def has_plugin(name: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{name}") is not None


def sweep_command(tmp_path: Path, *args: str, base: list[str] = TINY) -> tuple[list[str], dict[str, str], Path]:
    """(argv, env, sweep dir) of ``python -m dqnfast.train -m *base *args`` with the sweep dir under tmp_path."""
    sweep = tmp_path / "multirun"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), HOME=str(tmp_path)
    )  # no W&B credentials or settings: wandb stays offline
    env.pop("WANDB_API_KEY", None)
    return [sys.executable, "-m", "dqnfast.train", "-m", *base, *args, f"hydra.sweep.dir={sweep}"], env, sweep


def multirun(tmp_path: Path, *args: str, timeout: float = 300) -> Path:
    """``python -m dqnfast.train -m TINY *args`` with the sweep dir under tmp_path; returns the sweep dir."""
    cmd, env, sweep = sweep_command(tmp_path, *args)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    return sweep


def report(sweep: Path) -> list[dict]:
    """``python -m dqnfast.report SWEEP`` through its entry point in this process (its command
    line in a process of its own is tests/test_report.py's)."""
    from dqnfast.cli.report import main

    assert main([str(sweep), "--reps", "200"]) == 0
    assert (sweep / "report.md").exists() and (sweep / "report.png").stat().st_size > 10_000
    return list(csv.DictReader(open(sweep / "report.csv")))


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def check_job(d: Path) -> dict:
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    assert int(rows[-1]["env_steps"]) == 2000 and len(rows) == 4
    ev = json.loads((d / "eval.json").read_text())
    assert len(ev["scores"]) == 2 and math.isfinite(ev["mean"])
    assert (d / "checkpoint.pt").exists() and (d / ".hydra" / "overrides.yaml").exists()
    return ev


# ------------------------------------------------------------------ launchers
def test_basic_launcher_sweep_logs_every_job_to_one_wandb_group_and_reports(tmp_path):
    from test_loggers import read_wandb_run

    sweep = multirun(
        tmp_path,
        "seed=0",
        "replay.n_step=1,3",
        "logger.wandb=true",
        "logger.wandb_mode=offline",
        "logger.wandb_checkpoint=true",
    )
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    groups = set()
    for d in jobs:
        ev = check_job(d)
        run = read_wandb_run(d)  # the real offline run that `wandb sync` would upload
        groups.add(run["run"].run_group)
        rows = list(csv.DictReader(open(d / "metrics.csv")))
        train = [h for h in run["history"] if "charts/SPS" in h]
        assert [h["env_steps"] for h in train] == [int(r["env_steps"]) for r in rows]
        assert [h["charts/episodic_return"] for h in train] == pytest.approx([float(r["score_mean"]) for r in rows])
        (evh,) = [h for h in run["history"] if "eval/mean" in h]
        assert evh["eval/mean"] == pytest.approx(ev["mean"]) and evh["env_steps"] == 2000
        assert evh["eval/eval_scores/_type"] == "image-file" and evh["eval/learning_curve/_type"] == "image-file"
        assert [a.type for a in run["artifacts"]] == ["model"]
        config = {u.key: json.loads(u.value_json) for u in run["run"].config.update}
        assert config["seed"] == int(ev["run_name"].split("__")[2]) and config["hydra"]["job_num"] == int(d.name)
        assert {"CartPole", "dqn", "multirun"} <= set(run["run"].tags) and run["exit_code"] == 0
    assert groups == {f"{sweep.parent.name}_{sweep.name}"}  # one W&B group per sweep
    rows = report(sweep)
    assert [(r["game"], r["config"], r["seeds"], r["n"]) for r in rows] == [
        ("CartPole", "replay.n_step=1", "0", "1"),
        ("CartPole", "replay.n_step=3", "0", "1"),
    ]


@pytest.mark.skipif(not has_plugin("hydra_joblib_launcher"), reason="pip install hydra-joblib-launcher")
def test_joblib_launcher_runs_jobs_in_parallel_with_their_share_of_the_cores(tmp_path):
    sweep = multirun(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1")
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    cores = max(1, len(os.sched_getaffinity(0)) // 2)
    for d in jobs:
        check_job(d)
        assert f"threads: {cores} core(s) for this job" in (d / "train.log").read_text()
    rows = report(sweep)
    assert [(r["config"], r["seeds"], r["n"]) for r in rows] == [("default", "0 1", "2")]


@pytest.mark.skipif(not has_plugin("hydra_optuna_sweeper"), reason="pip install hydra-optuna-sweeper")
def test_optuna_sweeper_maximizes_the_final_evaluation(tmp_path):
    sweep = multirun(tmp_path, "+sweep=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2")
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    means = [check_job(d)["mean"] for d in jobs]
    res = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert res["best_value"] == pytest.approx(max(means))
    assert set(res["best_params"]) == {"optim.lr", "algo.target_update_period", "replay.n_step"}
    rows = report(sweep)
    assert sum(int(r["n"]) for r in rows) == 2
    assert "## Optuna: best trial" in (sweep / "report.md").read_text()


# ------------------------------------------------------------ failed jobs
SHORT = [  # a few hundred steps: enough for a diverging learning rate to show
    "preset=cartpole",
    "algo.total_steps=600",
    "algo.learning_starts=100",
    "envs.eval.episodes=2",
    "envs.eval.num_envs=2",
    "logger.progress=false",
]


def test_a_bad_value_or_combination_in_any_job_refuses_the_sweep_before_any_job_runs(tmp_path, train_in_process):
    """Every job's config is composed and checked first: one line naming the job, exit 2, nothing written.

    The first sweep is a process of its own, the second goes through the same entry point in this one."""
    cases = [
        (
            ["algo.total_steps=3000", "algo.learning_starts=1000,5000"],
            "error: algo.total_steps: 3000 is below algo.learning_starts=5000",
            "(sweep job 1 of 2: algo.learning_starts=5000); no job of the sweep was run",
        ),
        (
            ["algo.batch_size=32,-1,64", "seed=0,1"],
            "error: algo.batch_size: must be > 0, got -1",
            "(sweep job 2 of 6: algo.batch_size=-1 seed=0); no job of the sweep was run",
        ),
    ]
    for i, (args, start, end) in enumerate(cases):
        (tmp_path / str(i)).mkdir()
        cmd, env, _ = sweep_command(tmp_path / str(i), *args, base=["preset=cartpole", "logger.progress=false"])
        if i == 0:
            p = subprocess.run(cmd, cwd=tmp_path / str(i), env=env, capture_output=True, text=True, timeout=300)
            code, err = p.returncode, p.stderr
        else:
            code, err = train_in_process(*cmd[3:], cwd=tmp_path / str(i))  # cmd: python -m dqnfast.train ...
        assert code == 2 and "Traceback" not in err, (args, err)
        (line,) = err.strip().splitlines()
        assert line.startswith(start) and line.endswith(end), line
        assert list((tmp_path / str(i)).iterdir()) == []  # no sweep dir, no job folder


def test_a_job_that_fails_while_running_is_recorded_and_the_sweep_goes_on(tmp_path):
    """A diverged job: its one line in its failed.json, the next job runs, exit 1, the report lists both."""
    cmd, env, sweep = sweep_command(tmp_path, "algo.max_grad_norm=null", "optim.lr=1e20,1e-3", base=SHORT)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert errors[0].startswith(
        f"error: sweep job 0 failed (recorded in {sweep / '0' / 'failed.json'}): training diverged"
    )
    assert (
        errors[1].startswith("error: 1 of 2 sweep jobs failed (0: errors above, recorded in the jobs' failed.json); ")
        and f"python -m dqnfast.report {sweep}" in errors[1]
    )
    failure = json.loads((sweep / "0" / "failed.json").read_text())
    assert failure["exit_code"] == 1 and failure["error"] == errors[0].split("failed.json): ", 1)[1]
    ev = json.loads((sweep / "1" / "eval.json").read_text())  # the good learning rate still ran
    assert math.isfinite(ev["mean"]) and (sweep / "1" / "checkpoint.pt").exists()
    rows = report(sweep)
    assert [(r["config"], r["n"]) for r in rows] == [("optim.lr=0.001", "1"), ("optim.lr=1e+20", "0")]
    md = (sweep / "report.md").read_text()
    assert "2 jobs (1 with a final evaluation, 1 failed)" in md and "| failed (exit 1): training diverged" in md


# -------------------------------------------------------- cores per job
def test_job_cores_divides_the_machine_between_parallel_jobs():
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job_cores({"_target_": joblib, "n_jobs": 4}, 16) == 4
    assert job_cores({"_target_": joblib, "n_jobs": 3}, 16) == 5
    assert job_cores({"_target_": joblib, "n_jobs": -1}, 16) == 1  # joblib: -1 = one job per core
    assert job_cores({"_target_": joblib, "n_jobs": -3}, 16) == 1  # 14 jobs
    assert job_cores({"_target_": joblib, "n_jobs": 32}, 16) == 1
    ray = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert job_cores({"_target_": ray, "ray": {"remote": {"num_cpus": 6}}}, 64) == 6
    assert job_cores({"_target_": ray, "ray": {"remote": {}}}, 64) is None
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert job_cores({"_target_": slurm, "cpus_per_task": 10}, 64) == 10
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert job_cores({"_target_": basic}, 16) is None and job_cores(None, 16) is None


# ------------------------------------------------------ cluster configs
def launcher_config(name: str) -> dict:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.hydra.launcher, resolve=False)


@pytest.mark.parametrize("name, base", [("slurm", "submitit_slurm"), ("ray_cluster", "ray")])
def test_cluster_launcher_configs_extend_the_plugins_own_configs(name, base):
    """The shipped configs extend the plugin's typed config (never shadow it by its own name)."""
    cfg = yaml.safe_load((CONF_DIR / "hydra" / "launcher" / f"{name}.yaml").read_text())
    assert cfg["defaults"][0] == base and not (CONF_DIR / "hydra" / "launcher" / f"{base}.yaml").exists()


@pytest.mark.skipif(not has_plugin("hydra_submitit_launcher"), reason="pip install hydra-submitit-launcher")
def test_slurm_launcher_config_composes_with_the_submitit_plugin():
    c = launcher_config("slurm")
    assert c["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert c["cpus_per_task"] == 8 and c["gpus_per_node"] == 1 and c["timeout_min"] == 1440
    assert job_cores(c, 64) == 8


@pytest.mark.skipif(not has_plugin("hydra_ray_launcher"), reason="pip install hydra-ray-launcher")
def test_ray_launcher_config_composes_with_the_ray_plugin():
    c = launcher_config("ray_cluster")
    assert c["_target_"] == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert c["ray"]["init"]["address"] == "auto" and c["ray"]["remote"]["num_gpus"] == 1
    assert job_cores(c, 64) == 8


@pytest.mark.slow
@pytest.mark.skipif(not has_plugin("hydra_submitit_launcher"), reason="pip install hydra-submitit-launcher")
def test_submitit_local_launcher_sweep(tmp_path):
    """The submitit plugin end to end, with its local executor standing in for SLURM."""
    sweep = multirun(
        tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", "seed=0,1", timeout=600
    )
    for d in job_dirs(sweep):
        check_job(d)
    assert [r["n"] for r in report(sweep)] == ["2"]


@pytest.mark.slow
@pytest.mark.skipif(not has_plugin("hydra_ray_launcher"), reason="pip install hydra-ray-launcher")
def test_ray_launcher_local_sweep(tmp_path):
    """The Ray plugin end to end on a local Ray instance (what ray_cluster does on a cluster)."""
    sweep = multirun(
        tmp_path,
        "hydra/launcher=ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.remote.num_cpus=1",
        "seed=0,1",
        timeout=600,
    )
    for d in job_dirs(sweep):
        check_job(d)
        assert "threads: 1 core(s) for this job" in (d / "train.log").read_text()
    assert [r["n"] for r in report(sweep)] == ["2"]
