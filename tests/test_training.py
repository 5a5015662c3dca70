"""dqnfast.training as a library: a run composed from plain dataclasses, no Hydra, and its thread sizing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dqnfast.config import (
    AlgoConfig,
    Config,
    EnvsConfig,
    EvalProtocolConfig,
    ExploreConfig,
    LoggerConfig,
    NetworkConfig,
    OptimConfig,
    ReplayConfig,
)

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


def cartpole(total_steps: int = 60_000) -> Config:
    """conf/preset/cartpole.yaml as plain dataclasses."""
    return Config(
        game="CartPole",
        envs=EnvsConfig(num_envs=4, eval=EvalProtocolConfig(episodes=10, num_envs=10)),
        algo=AlgoConfig(
            total_steps=total_steps,
            learning_starts=1000,
            batch_size=64,
            replay_ratio=16.0,
            target_update_period=1,
            tau=0.01,
            max_grad_norm=10.0,
        ),
        network=NetworkConfig(name="mlp", mlp_hidden=[128, 128]),
        replay=ReplayConfig(capacity=50_000, n_step=3),
        optim=OptimConfig(name="adam", lr=1e-3, eps=1e-8),
        explore=ExploreConfig(schedule="linear", end=0.05, decay_steps=10_000, eval_epsilon=0.0),
        logger=LoggerConfig(log_every=5000, checkpoint_every=0, progress=False),
    )


def test_the_plain_dataclasses_are_the_cartpole_preset():
    from hydra import compose, initialize_config_dir  # here: the script below imports this module

    from dqnfast.cli.train import CONF_DIR, to_config

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        composed = to_config(compose(config_name="config", overrides=["preset=cartpole", "logger.progress=false"]))
    assert composed == cartpole()


SCRIPT = """
import dataclasses, json, logging, os, sys
sys.path.insert(0, {tests!r})
from test_training import cartpole
cores = {cores!r}
if cores is not None:
    os.sched_setaffinity(0, cores)
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
from dqnfast.training import train
cfg = dataclasses.replace(cartpole({steps}), device="cpu")
summary = train(cfg, {run_dir!r})
import torch
print(json.dumps({{"hydra": "hydra" in sys.modules, "torch_threads": torch.get_num_threads(),
                   "env_steps": summary["env_steps"], "eval_mean": summary["eval"]["mean"]}}))
"""


def run_script(tmp_path: Path, *, steps: int, cores: set[int] | None = None) -> tuple[dict, str]:
    script = SCRIPT.format(tests=str(Path(__file__).parent), cores=cores, steps=steps, run_dir=str(tmp_path / "run"))
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1]), p.stderr


@pytest.fixture(scope="module")
def library_run(tmp_path_factory) -> tuple[dict, str, Path]:
    """One run of the script, 2000 agent steps on one core of the affinity mask where the OS can
    set it: (its summary line, its log, its run dir). Two tests read it."""
    tmp = tmp_path_factory.mktemp("library")
    cores = {min(os.sched_getaffinity(0))} if hasattr(os, "sched_setaffinity") else None
    out, err = run_script(tmp, steps=2000, cores=cores)
    return out, err, tmp / "run"


def test_a_run_from_plain_dataclasses_trains_cartpole_without_hydra(library_run):
    out, _, run = library_run
    assert out["hydra"] is False  # nothing on the library path imports Hydra
    assert out["env_steps"] == 2000 and out["eval_mean"] is not None
    assert (run / "metrics.csv").is_file() and (run / "checkpoint.pt").is_file()
    assert json.loads((run / "eval.json").read_text())["episodes"] == 10


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_a_single_run_sizes_its_threads_to_the_affinity_mask(library_run):
    out, err, _ = library_run
    assert "threads: 1 core(s) here: envpool 1, sampler 1, torch 1" in err, err[-2000:]
    assert out["torch_threads"] == 1


def test_a_failed_final_evaluation_leaves_the_checkpoint_and_says_how_to_evaluate(tmp_path, monkeypatch):
    import dqnfast.envs
    from dqnfast.envs import EnvCreationError
    from dqnfast.training import train

    make_env = dqnfast.envs.make_env

    def fail_for_evaluation(*args, **kwargs):  # evaluation sizes its own envs (num_envs=); training does not
        if kwargs.get("num_envs"):
            raise EnvCreationError("envpool could not create 10 CartPole-v1 envs: could not start its threads")
        return make_env(*args, **kwargs)

    monkeypatch.setattr(dqnfast.envs, "make_env", fail_for_evaluation)
    with pytest.raises(EnvCreationError) as e:
        train(cartpole(total_steps=1200), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("final evaluation: envpool could not create")
    assert f"python -m dqnfast.evaluate run={tmp_path}" in msg and (tmp_path / "checkpoint.pt").exists()


def test_resume_refills_with_the_agents_epsilon_greedy_policy_at_the_resumed_epsilon(tmp_path, monkeypatch):
    import dataclasses

    from dqnfast.agent.actor import Actor
    from dqnfast.training import train

    cfg = cartpole(total_steps=1200)
    cfg = dataclasses.replace(cfg, explore=dataclasses.replace(cfg.explore, decay_steps=100, end=0.05))
    train(cfg, tmp_path)
    seen: list[float] = []
    act = Actor.act

    def spy(self, obs, epsilon):
        seen.append(float(epsilon))
        return act(self, obs, epsilon)

    monkeypatch.setattr(Actor, "act", spy)
    summary = train(
        dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, total_steps=1400)), tmp_path, resume=tmp_path
    )
    assert summary["env_steps"] == 1400
    refill = seen[: 1000 // 4]  # learning_starts agent steps on 4 envs, before the first counted step
    assert refill and all(e == pytest.approx(0.05) for e in refill), sorted(set(refill))[:5]


def test_loop_state_keeps_the_gradient_norm_sums_across_a_checkpoint_and_reads_older_ones():
    import torch

    from dqnfast.training.state import LoopState

    def fed(*norms: float) -> LoopState:
        st = LoopState(num_envs=1, score_window=10)
        for g in norms:
            st.add_metrics({"loss": torch.tensor(1.0), "q_mean": torch.tensor(0.0), "grad_norm": torch.tensor(g)})
        return st

    counters = {"env_steps": 0, "episodes": 0}
    resumed = LoopState(num_envs=1, score_window=10)
    loop = fed(1.0, 4.0).state_dict(checkpoint_every=0)
    resumed.load_state_dict(loop, counters, device="cpu", log_every=100, checkpoint_every=0, envs_too=False)
    resumed.add_metrics({"loss": torch.tensor(1.0), "q_mean": torch.tensor(0.0), "grad_norm": torch.tensor(1.0)})
    row = resumed.row(frame_skip=4, updates=3)
    assert (
        (row["grad_norm"], row["grad_norm_max"])
        == (2.0, 4.0)
        == tuple(map(fed(1.0, 4.0, 1.0).row(frame_skip=4, updates=3).get, ("grad_norm", "grad_norm_max")))
    )
    # a checkpoint written before the norms were kept: the row averages the updates after it
    older = {k: v for k, v in loop.items() if k not in ("n_grad", "grad_sum", "grad_max")}
    resumed = LoopState(num_envs=1, score_window=10)
    resumed.load_state_dict(older, counters, device="cpu", log_every=100, checkpoint_every=0, envs_too=False)
    resumed.add_metrics({"loss": torch.tensor(1.0), "q_mean": torch.tensor(0.0), "grad_norm": torch.tensor(3.0)})
    row = resumed.row(frame_skip=4, updates=3)
    assert (row["grad_norm"], row["grad_norm_max"], row["loss"]) == (3.0, 3.0, 1.0)
