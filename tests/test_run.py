"""dqnfast.training.run: one lifecycle for every learner, and what one CLI run does once.

Every learner's run goes through the same functions: the lock that refuses a second writer,
the checkpoint and the one line of a SIGTERM, the resume plan, the summary. The CLI checks a
run's config once and reads a resumed run's checkpoint once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI_ENV

import dqnfast.training.run as lifecycle
from dqnfast.config import ConfigError

# learner -> overrides of a run of a few seconds, on CartPole (an exact resume: envs.resume=replay)
TINY = {
    "dqn": [
        "preset=cartpole",
        "algo.learning_starts=200",
        "envs.resume=replay",
        "logger.log_every=200",
    ],
    "reinforce": ["preset=reinforce", "envs.num_envs=4", "logger.log_every=100"],
}
COMMON = ["logger.progress=false", "envs.eval.episodes=2", "envs.eval.num_envs=2", "torch_threads=1"]
TOTAL = 800

# what a run of any learner calls in the lifecycle, from the lock to the stop line
LIFECYCLE = [
    "claim",
    "plan_resume",
    "_set_up_process",
    "_loop_state",
    "open_loggers",
    "_loop",
    "marks",
    "log_row",
    "end_training",
    "checkpoint",
    "stopped",
]


def config(learner: str, total_steps: int = TOTAL):
    from hydra import compose, initialize_config_dir

    from dqnfast.cli.train import CONF_DIR, to_config

    overrides = [*TINY[learner], *COMMON, f"algo.total_steps={total_steps}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return to_config(compose(config_name="config", overrides=overrides))


@pytest.fixture
def lock_holder(tmp_path):
    """Another process that holds ``tmp_path / 'held'``'s lock, as a running run does."""
    held = tmp_path / "held"
    code = (
        "import time\n"
        "from dqnfast.training.rundir import acquire\n"
        f"acquire({str(held)!r}, refusal='run_dir: wait')\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], env=CLI_ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield held, p.pid
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


def spy_lifecycle(monkeypatch) -> list[str]:
    """Records every call of the lifecycle's functions (``LIFECYCLE``) by name, in order."""
    calls: list[str] = []
    for name in LIFECYCLE:
        real = getattr(lifecycle, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(lifecycle, name, spy)
    return calls


def sigterm_at(monkeypatch, steps: int) -> None:
    """The run sends itself SIGTERM once its console has counted ``steps`` agent steps (any learner's loop)."""
    from dqnfast.loggers import RunLoggers

    progress = RunLoggers.progress
    seen = {"steps": 0}

    def progress_then_stop(self, k):
        progress(self, k)
        seen["steps"] += k
        if seen["steps"] >= steps and not seen.get("sent"):
            seen["sent"] = True
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler takes it

    monkeypatch.setattr(RunLoggers, "progress", progress_then_stop)


def one_learners_lifecycle(learner: str, tmp_path: Path, held: Path, monkeypatch, caplog) -> dict:
    """A refused run on a held dir, a run stopped by SIGTERM, its resume to the end: what each showed."""
    from dqnfast.checkpoint import load_checkpoint

    seen: dict = {}
    with pytest.raises(ConfigError) as refused:
        lifecycle.train(config(learner), held)
    seen["refused"] = (refused.value.key, re.sub(r"pid \d+.*", "pid", refused.value.message))
    assert not (held / "checkpoint.pt").exists()

    run = tmp_path / learner
    with monkeypatch.context() as m:
        calls = spy_lifecycle(m)
        sigterm_at(m, 300)
        caplog.clear()
        stopped = lifecycle.train(config(learner), run)
    seen["calls"] = sorted(set(calls))
    lines = [r.getMessage() for r in caplog.records if "SIGTERM" in r.getMessage()]
    seen["stop_line"] = [re.sub(r"\d+ agent steps", "N agent steps", x).replace(str(run), "RUN") for x in lines]
    assert stopped["interrupted"] == "SIGTERM" and stopped["stopped_in"] == "training", stopped
    assert load_checkpoint(run / "checkpoint.pt")["counters"]["env_steps"] == stopped["env_steps"] < TOTAL
    assert lines == [
        f"SIGTERM: stopped at {stopped['env_steps']} agent steps; checkpoint {run / 'checkpoint.pt'}; "
        f"continue with: python -m dqnfast.train resume={run}"
    ]

    plans = []
    plan_resume = lifecycle.plan_resume
    with monkeypatch.context() as m:
        m.setattr(lifecycle, "plan_resume", lambda *a, **k: plans.append(plan_resume(*a, **k)) or plans[-1])
        done = lifecycle.train(config(learner), run, resume=run)
    (plan,) = plans
    want = (1, True, config(learner).seed, stopped["run_name"], False)
    assert (plan.resumes, plan.replay_envs, plan.env_seed, plan.name, plan.eval_only) == want
    assert plan.counters["env_steps"] == stopped["env_steps"] and plan.source == run / "checkpoint.pt"
    assert done["env_steps"] >= TOTAL and done["interrupted"] is None and done["eval"] is not None
    seen["summary_keys"] = (sorted(stopped), sorted(done))
    seen["plan_keys"] = sorted(vars(plan))
    return seen


def test_dqn_and_reinforce_runs_go_through_the_same_lifecycle(tmp_path, lock_holder, monkeypatch, caplog):
    held, pid = lock_holder
    caplog.set_level("INFO", logger="dqnfast.train")
    dqn = one_learners_lifecycle("dqn", tmp_path, held, monkeypatch, caplog)
    reinforce = one_learners_lifecycle("reinforce", tmp_path, held, monkeypatch, caplog)
    assert dqn["refused"] == reinforce["refused"] and dqn["refused"][0] == "run_dir", dqn["refused"]
    assert "in use by a running dqnfast process (pid" in dqn["refused"][1]
    assert dqn["calls"] == reinforce["calls"] == sorted(LIFECYCLE)
    assert dqn["stop_line"] == reinforce["stop_line"] and len(dqn["stop_line"]) == 1
    assert dqn["summary_keys"] == reinforce["summary_keys"]
    assert dqn["summary_keys"][0] == dqn["summary_keys"][1]
    assert dqn["plan_keys"] == reinforce["plan_keys"]


def test_every_learner_name_has_a_lifecycle_plug():
    from dqnfast.config.schema import LearnerName

    assert set(lifecycle.LEARNERS) == {str(x) for x in LearnerName}
    for name in lifecycle.LEARNERS:
        learning = lifecycle.learning_for(config(name))
        for method in ("build", "restore", "log_start", "estimate", "start", "step", "value_name", "save"):
            assert callable(getattr(learning, method)), (name, method)


def test_a_cli_run_checks_its_config_once_and_its_resume_reads_the_checkpoint_once(
    tmp_path, train_in_process, monkeypatch
):
    """Per CLI run: one validation, one resolution of the game and of the device, and a resume reads
    and checksums its checkpoint once."""
    import dqnfast.checkpoint
    import dqnfast.config
    import dqnfast.config.resolve
    import dqnfast.config.schema
    import dqnfast.envs

    counts = {"validate": 0, "load_checkpoint": 0, "resolve_game": 0, "resolve_device": 0}

    def counted(module_attrs, name):
        real = getattr(module_attrs[0], name)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        for module in module_attrs:
            monkeypatch.setattr(module, name, wrapper)

    counted([dqnfast.config, dqnfast.config.schema], "validate")
    counted([dqnfast.checkpoint], "load_checkpoint")
    counted([dqnfast.envs], "resolve_game")
    counted([dqnfast.config.resolve], "resolve_device")
    run = tmp_path / "run"
    args = [*TINY["dqn"], *COMMON, "algo.learning_starts=100", "logger.checkpoint_every=200"]
    code, err = train_in_process(*args, "algo.total_steps=400", f"hydra.run.dir={run}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert counts == {"validate": 1, "load_checkpoint": 0, "resolve_game": 1, "resolve_device": 1}
    code, err = train_in_process(f"resume={run}", "algo.total_steps=600", cwd=tmp_path)
    assert code == 0, err[-3000:]
    assert counts == {"validate": 2, "load_checkpoint": 1, "resolve_game": 2, "resolve_device": 2}
    assert "at 400 agent steps" in (run / "train.log").read_text()
