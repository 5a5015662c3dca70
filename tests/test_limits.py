"""What a run may ask of the machine, and how it stops when something runs out.

Memory: one budget (ring + envs + buffers) against the tightest of MemAvailable and the
cgroup v2 and v1 limits, with headroom, read from fake /proc and /sys files here. Threads,
frame stacks, seeds and step counts out of range are refused in one line before anything
starts. A diverging run stops with one line and keeps its last good checkpoint; a SIGTERM
stops a long update burst; a full disk is one line and the previous checkpoint stays the
newest. Every refusal is one line (``error: <key>: ...`` from the CLI, exit 2).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from dqnfast.atomic import TEMP_MARK
from dqnfast.config import AlgoConfig, Config, ConfigError, EnvsConfig, EvalProtocolConfig, LoggerConfig, ReplayConfig
from dqnfast.memory import MemorySources, available_memory, memory_limits, plannable_bytes
from dqnfast.training import check_config
from dqnfast.training.limits import (
    EVAL_SEED_OFFSET,
    INT32_MAX,
    RESERVED_RESUMES,
    check_resume_seed,
    check_run_memory,
    run_memory_needs,
    seed_limit,
)

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
GB = 10**9
UNLIMITED_V1 = "9223372036854771712"

_TINY = {
    "preset": "cartpole",
    "algo.learning_starts": 100,
    "algo.total_steps": 200,
    "logger.log_every": 100,
    "logger.progress": "false",
    "envs.eval.episodes": 1,
    "envs.eval.num_envs": 1,
    "envs.eval.max_episode_steps": 50,
    "torch_threads": 1,
    "envs.num_threads": 1,
    "replay.num_threads": 1,
}


def tiny(**changes) -> list[str]:
    """A CartPole run of seconds, as overrides; ``changes`` use ``__`` for dots (algo__total_steps=300)."""
    over = {**_TINY, **{k.replace("__", "."): v for k, v in changes.items()}}
    return [f"{k}={v}" for k, v in over.items()]


TINY = tiny()


def one_line_error(stderr: str) -> str:
    """The single ``error:`` line of a refused or stopped command (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m dqnfast.train *args``; the timeout only turns a hang into a failure."""
    return subprocess.run(
        [sys.executable, "-m", "dqnfast.train", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------- memory sources
def fake_machine(tmp_path: Path, *, mem_available: int, cgroup: str, files: dict[str, str] | None = None):
    """A /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup tree under tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "meminfo").write_text(
        f"MemTotal:       {4 * mem_available // 1024} kB\nMemAvailable:   {mem_available // 1024} kB\n"
    )
    (tmp_path / "self_cgroup").write_text(cgroup)
    root = tmp_path / "cgroup"
    root.mkdir(exist_ok=True)
    for rel, text in (files or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return MemorySources(tmp_path / "meminfo", tmp_path / "self_cgroup", root)


def test_mem_available_is_the_limit_without_cgroup_limits(tmp_path):
    src = fake_machine(
        tmp_path,
        mem_available=2 * GB,
        cgroup="0::/job\n",
        files={"job/memory.max": "max\n", "job/memory.current": "123\n"},
    )
    a = available_memory(src)
    assert a.source == "MemAvailable" and abs(a.nbytes - 2 * GB) < 1024


def test_cgroup_v2_limit_counts_every_level_and_reclaimable_cache(tmp_path):
    src = fake_machine(
        tmp_path,
        mem_available=64 * GB,
        cgroup="0::/slice/job\n",
        files={
            "slice/memory.max": f"{6 * GB}\n",  # the parent's limit is the tighter one
            "slice/memory.current": f"{2 * GB}\n",
            "slice/memory.stat": f"anon 1\ninactive_file {GB}\n",
            "slice/job/memory.max": f"{8 * GB}\n",
            "slice/job/memory.current": f"{GB}\n",
        },
    )
    a = available_memory(src)
    assert a.nbytes == 6 * GB - (2 * GB - GB)  # inactive file pages are reclaimed before an OOM kill
    assert a.source.startswith("cgroup v2 memory.max of") and a.source.endswith("slice")
    assert len(memory_limits(src)) == 3  # MemAvailable and both levels


def test_cgroup_v1_limit_minus_usage_is_the_limit(tmp_path):
    src = fake_machine(
        tmp_path,
        mem_available=64 * GB,
        cgroup="5:devices:/\n4:memory:/process_api/job\n0::/\n",
        files={
            "memory/memory.limit_in_bytes": UNLIMITED_V1,
            "memory/process_api/job/memory.limit_in_bytes": f"{8 * GB}\n",
            "memory/process_api/job/memory.usage_in_bytes": f"{GB}\n",
            "memory/process_api/job/memory.stat": f"hierarchical_memory_limit {8 * GB}\ntotal_inactive_file 0\n",
        },
    )
    a = available_memory(src)
    assert a.nbytes == 7 * GB and a.source.startswith("cgroup v1 memory.limit_in_bytes of")


def test_cgroup_v1_hierarchical_limit_and_an_unlimited_group(tmp_path):
    src = fake_machine(
        tmp_path,
        mem_available=64 * GB,
        cgroup="4:memory:/job\n",
        files={
            "memory/job/memory.limit_in_bytes": UNLIMITED_V1,  # this group: no limit of its own
            "memory/job/memory.usage_in_bytes": f"{GB}\n",
            "memory/job/memory.stat": f"hierarchical_memory_limit {3 * GB}\ntotal_inactive_file {GB // 2}\n",
        },
    )
    assert available_memory(src).nbytes == 3 * GB - GB // 2
    unlimited = fake_machine(
        tmp_path / "u",
        mem_available=5 * GB,
        cgroup="4:memory:/job\n",
        files={"memory/job/memory.limit_in_bytes": UNLIMITED_V1, "memory/job/memory.usage_in_bytes": "1\n"},
    )
    assert available_memory(unlimited).source == "MemAvailable"


def test_a_container_sees_its_own_cgroup_at_the_root(tmp_path):
    """/proc/self/cgroup names the host's path, which is not mounted inside the container."""
    src = fake_machine(
        tmp_path,
        mem_available=64 * GB,
        cgroup="0::/kubepods/pod1/abc\n",
        files={"memory.max": f"{4 * GB}\n", "memory.current": f"{GB}\n"},
    )
    assert available_memory(src).nbytes == 3 * GB


# ------------------------------------------------------------------ the run budget
def atari(**replay) -> Config:
    return Config(game="Pong", device="cpu", replay=ReplayConfig(**replay))


def test_a_7gb_ring_inside_an_8gb_cgroup_v1_limit_is_refused(tmp_path):
    src = fake_machine(
        tmp_path,
        mem_available=64 * GB,
        cgroup="4:memory:/job\n",
        files={"memory/job/memory.limit_in_bytes": f"{8 * GB}\n", "memory/job/memory.usage_in_bytes": f"{GB}\n"},
    )
    with pytest.raises(ConfigError) as e:
        check_run_memory(atari(capacity=1_000_000), "Pong-v5", "atari", on_cpu=True, sources=src)
    msg = str(e.value)
    assert e.value.key == "replay.capacity" and "\n" not in msg
    assert "cgroup v1 memory.limit_in_bytes" in msg and "7.00 GB" in msg and "lower replay.capacity to at most" in msg


def test_a_ring_just_under_mem_available_is_refused_by_the_headroom(tmp_path):
    """20.15 GB of ring against 20.8 GB available: pages commit as written, so it would be killed hours in."""
    from dqnfast import _core

    per_slot = _core.bytes_per_slot(84 * 84)
    cap = int(20.15 * GB) // per_slot // 8 * 8
    src = fake_machine(tmp_path, mem_available=int(20.8 * GB), cgroup="0::/\n")
    with pytest.raises(ConfigError) as e:
        check_run_memory(atari(capacity=cap), "Pong-v5", "atari", on_cpu=False, sources=src)
    msg = str(e.value)
    assert "MemAvailable leaves 20.80 GB" in msg and "90% minus 0.5 GB" in msg
    most = int(msg.split("to at most ")[1].split()[0].rstrip(","))
    needs = run_memory_needs(atari(capacity=most), "Pong-v5", "atari", on_cpu=False)
    assert sum(n.nbytes for n in needs) <= plannable_bytes(int(20.8 * GB))  # the suggested capacity fits
    check_run_memory(atari(capacity=most // 8 * 8), "Pong-v5", "atari", on_cpu=False, sources=src)


def test_a_hundred_thousand_envs_are_budgeted(tmp_path):
    src = fake_machine(tmp_path, mem_available=64 * GB, cgroup="0::/\n")
    cfg = dataclasses.replace(atari(capacity=1_000_000), envs=EnvsConfig(num_envs=100_000))
    with pytest.raises(ConfigError) as e:
        check_run_memory(cfg, "Pong-v5", "atari", on_cpu=True, sources=src)
    assert e.value.key == "envs.num_envs" and "100000 envs" in str(e.value) and "lower envs.num_envs" in str(e.value)


def test_the_budget_lists_each_part_and_small_runs_fit(tmp_path):
    src = fake_machine(tmp_path, mem_available=4 * GB, cgroup="0::/\n")
    cfg = Config(game="CartPole", device="cpu", replay=ReplayConfig(capacity=50_000, n_step=3))
    needs = {n.key: n.nbytes for n in check_run_memory(cfg, "CartPole-v1", "classic", on_cpu=True, sources=src)}
    assert set(needs) == {"envs.num_envs", "replay.capacity", "algo.batch_size", "network.mlp_hidden"}
    big = Config(envs=EnvsConfig(num_envs=8, stack=16), algo=AlgoConfig(batch_size=512))
    pong = {n.key: n.nbytes for n in run_memory_needs(big, "Pong-v5", "atari", on_cpu=True)}
    small = {n.key: n.nbytes for n in run_memory_needs(Config(), "Pong-v5", "atari", on_cpu=True)}
    assert pong["envs.num_envs"] > small["envs.num_envs"] and pong["algo.batch_size"] > 16 * small["algo.batch_size"]


def test_image_frames_are_budgeted_at_their_own_size():
    """Procgen's 3x64x64 frames: a slot holds the whole image, and the network is the Nature CNN over it."""
    from dqnfast import _core

    cfg = Config(game="StarpilotEasy-v0", device="cpu", replay=ReplayConfig(capacity=100_000))
    needs = {n.key: n for n in run_memory_needs(cfg, "StarpilotEasy-v0", "envpool_image", on_cpu=True)}
    assert needs["replay.capacity"].unit >= _core.bytes_per_slot(3 * 64 * 64) > 3 * 64 * 64
    assert needs["replay.capacity"].nbytes >= 100_000 * 3 * 64 * 64
    assert "network.cnn_hidden" in needs  # the Nature CNN's key, not the MLP's


def test_cli_refuses_a_run_the_machine_cannot_hold_in_one_line(tmp_path):
    need = sum(
        n.nbytes
        for n in run_memory_needs(
            Config(envs=EnvsConfig(num_envs=100_000)), "Pong-v5", "atari", on_cpu=not torch.cuda.is_available()
        )
    )
    if need <= plannable_bytes(available_memory().nbytes):
        pytest.skip("this machine could hold 100000 Atari envs")
    proc = cli("game=Pong", "envs.num_envs=100000", "replay.capacity=1000000", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert line.startswith("error: envs.num_envs: this run needs") and "lower envs.num_envs" in line
    assert not (tmp_path / "outputs").exists()  # refused before anything was written


# ------------------------------------------------------------------ threads, stack, steps
def small(**changes) -> Config:
    cfg = Config(game="CartPole", replay=ReplayConfig(capacity=10_000))
    for k, v in changes.items():
        obj = cfg
        *path, last = k.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    return cfg


@pytest.mark.parametrize(
    "key, value",
    [
        ("replay.num_threads", 100_000),
        ("torch_threads", 100_000),
        ("envs.num_threads", 100_000),
        ("envs.num_threads", 10**12),
        ("replay.num_threads", 1025),
    ],
)
def test_thread_counts_beyond_the_machine_are_refused(key, value):
    with pytest.raises(ConfigError) as e:
        check_config(small(**{key: value}))
    assert e.value.key == key and "\n" not in str(e.value) and "at most" in str(e.value)


def test_thread_counts_up_to_four_per_core_are_accepted():
    from dqnfast.config.resolve import available_cores, max_threads

    n = max_threads(available_cores())
    assert n == min(1024, 4 * available_cores())
    check_config(small(**{"replay.num_threads": n, "torch_threads": n, "envs.num_threads": n}))


def test_a_frame_stack_beyond_the_rings_is_refused_and_the_ring_agrees():
    from dqnfast.config.schema import MAX_STACK
    from dqnfast.replay import ReplayRing

    for stack in (1000, MAX_STACK + 1):
        with pytest.raises(ConfigError) as e:
            check_config(dataclasses.replace(Config(), envs=EnvsConfig(stack=stack)))
        assert e.value.key == "envs.stack" and f"[1, {MAX_STACK}]" in str(e.value)
    ReplayRing(200, 1, (4, 4), stack=MAX_STACK, check_memory=False)  # the limit is the ring's own
    with pytest.raises(ValueError):
        ReplayRing(200, 1, (4, 4), stack=MAX_STACK + 1, check_memory=False)


HUGE = 99999999999999999999999  # beyond int64: Python ints have no limit, numpy, the ring and envpool do


@pytest.mark.parametrize(
    "key, value, valid",
    [
        ("algo.total_steps", HUGE, "use 1 to 281474976710656"),
        ("algo.total_steps", 2**48 + 1, "use 1 to 281474976710656"),
        ("algo.learning_starts", HUGE, "use 0 to 281474976710656"),
        ("explore.decay_steps", HUGE, "use 1 to 281474976710656"),
        ("logger.log_every", HUGE, "use 1 to 281474976710656"),
        ("logger.checkpoint_every", HUGE, "use 0 to 281474976710656"),
        ("logger.score_window", HUGE, "use 1 to 281474976710656"),
        ("envs.num_envs", HUGE, "use 1 to 2147483647"),
        ("envs.train.max_episode_steps", 2**31, "use 1 to 2147483647"),
        ("envs.eval.noop_max", HUGE, "use 0 to 2147483647"),
        ("algo.target_update_period", HUGE, "at most 9223372036854775807"),
        ("network.mlp_hidden", [64, HUGE], "at most 9223372036854775807"),
        ("logger.keep_checkpoints", HUGE, "at most 9223372036854775807"),
    ],
)
def test_integers_too_large_for_what_they_size_are_refused_with_the_range(key, value, valid):
    for learner in ("dqn", "reinforce"):
        with pytest.raises(ConfigError) as e:
            check_config(small(learner=learner, **{key: value}))
        assert e.value.key == key and "\n" not in str(e.value), str(e.value)
        assert str(e.value).startswith(f"{key}: {value if not isinstance(value, list) else value[-1]} is out of range")
        assert valid in str(e.value), str(e.value)
    check_config(small(**{"algo.total_steps": 2**48, "envs.train.max_episode_steps": 2**31 - 1}))


@pytest.mark.parametrize("learner", ["dqn", "reinforce"])
def test_cli_refuses_a_huge_step_count_in_one_line_and_leaves_no_folder(tmp_path, learner):
    # a refusal takes seconds; the timeout turns a run that accepted the value (it would never end) into a failure
    args = [*tiny(learner=learner, algo__total_steps=HUGE), f"hydra.run.dir={tmp_path / 'run'}"]
    proc = cli(*args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_line_error(proc.stderr)
    assert line.startswith(f"error: algo.total_steps: {HUGE} is out of range: use 1 to "), line
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_a_dqn_run_that_ends_before_learning_starts_is_refused():
    cfg = Config(algo=AlgoConfig(total_steps=1000, learning_starts=5000))
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert e.value.key == "algo.total_steps" and "learning_starts=5000" in str(e.value)
    # REINFORCE has no learning_starts: its short runs stay valid
    check_config(
        Config(
            game="CartPole", learner="reinforce", algo=AlgoConfig(total_steps=300), replay=ReplayConfig(capacity=1000)
        )
    )


def test_a_resume_that_ends_before_learning_starts_is_refused_after_the_checkpoint_fits(tmp_path):
    """Checked once the checkpoint is known to be this run's: a misfit checkpoint is the first error."""
    from dqnfast.training import train

    train(cartpole(200), tmp_path)
    cfg = cartpole(400)
    cfg.algo.learning_starts = 1000
    cfg.resume = str(tmp_path)  # as the CLI's resume=<run dir> sets it
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path, resume=tmp_path)
    assert e.value.key == "algo.total_steps" and "learning_starts=1000" in str(e.value)
    cfg.game = "Acrobot"
    with pytest.raises(ConfigError) as e:
        train(cfg, tmp_path, resume=tmp_path)
    assert e.value.key == "resume"


# ------------------------------------------------------------------ seeds
@pytest.mark.parametrize("seed", [3_000_000_000, 2_147_480_000, INT32_MAX, -1, 2**64])
def test_seeds_whose_derived_seeds_leave_int32_are_refused_with_the_range(seed):
    cfg = small(seed=seed)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert e.value.key == "seed" and "\n" not in str(e.value)
    if seed >= 0:
        assert f"[0, {seed_limit(cfg)}]" in str(e.value)


def test_the_seed_range_covers_envs_evaluation_and_reserved_resumes():
    from dqnfast.training import ENV_RESEED_STRIDE

    cfg = small(**{"envs.num_envs": 8})
    hi = seed_limit(cfg)
    assert hi + ENV_RESEED_STRIDE * RESERVED_RESUMES + 7 == INT32_MAX
    assert hi + EVAL_SEED_OFFSET + cfg.envs.eval.num_envs - 1 <= INT32_MAX
    check_config(small(seed=hi, **{"envs.num_envs": 8}))
    with pytest.raises(ConfigError):
        check_config(small(seed=hi + 1, **{"envs.num_envs": 8}))
    check_resume_seed(hi + ENV_RESEED_STRIDE * RESERVED_RESUMES, 8, RESERVED_RESUMES)
    with pytest.raises(ConfigError) as e:  # resume #101 of a seed at the top of the range
        check_resume_seed(hi + ENV_RESEED_STRIDE * (RESERVED_RESUMES + 1), 8, RESERVED_RESUMES + 1)
    assert e.value.key == "resume" and "\n" not in str(e.value)


def test_cli_refuses_a_seed_that_overflows_at_the_final_evaluation(tmp_path):
    proc = cli(*TINY, "seed=2147480000", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert line.startswith("error: seed: 2147480000 is out of range: use a seed in [0, ")


def test_the_top_seed_trains_and_evaluates(tmp_path, train_in_process):
    """The largest accepted seed runs to the end, final evaluation (seed + 10000 + i) included
    (the CLI's entry point, in this process: the refusal above is the one in a process of its own)."""
    import json

    cfg = Config(game="CartPole", envs=EnvsConfig(num_envs=4, eval=EvalProtocolConfig(episodes=1, num_envs=1)))
    hi = seed_limit(cfg)
    code, err = train_in_process(*TINY, f"seed={hi}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert (ev.get("protocol") or ev)["seed"] == hi + EVAL_SEED_OFFSET


# ------------------------------------------------------------------ divergence
def test_a_diverging_run_stops_in_one_line_and_keeps_its_last_good_checkpoint(tmp_path, train_in_process):
    # the CLI's entry point in this process (exit status 1 and the one line on stderr); a run
    # that fails in a process of its own: test_cli_on_a_full_disk_exits_with_one_line
    from dqnfast.checkpoint import load_checkpoint, numbered_checkpoints

    run = tmp_path / "run"
    code, err = train_in_process(
        *tiny(
            optim__lr="1e10",
            algo__max_grad_norm="null",
            algo__learning_starts=200,  # a checkpoint at 100 before learning, then the first update blows up
            algo__total_steps=3000,
            logger__checkpoint_every=100,
        ),
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert code == 1, err[-3000:]
    line = one_line_error(err)
    assert "training diverged at agent step" in line and "optim.lr" in line and "is kept" in line
    step = int(line.split("agent step ")[1].split()[0])
    assert step < 3000 and not (run / "eval.json").exists()
    saved = numbered_checkpoints(run)
    assert saved and all(s < step for s, _ in saved)
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["counters"]["env_steps"] == saved[-1][0] and ck["counters"]["updates"] == 0
    assert all(torch.isfinite(t).all() and t.abs().max() < 100 for t in ck["online"].values())


@pytest.mark.parametrize("caught_by, log_every", [("the mean loss", 400), ("weights are not finite", 1000)])
def test_non_finite_metrics_and_weights_are_caught_without_a_sync_per_update(
    tmp_path, monkeypatch, caught_by, log_every
):
    """NaN losses used to pass silently. The loss check reads the sums the loop already copies
    to the host for a metric row; the weights are checked where a checkpoint copies them."""
    from dqnfast.agent.dqn import Learner
    from dqnfast.checkpoint import load_checkpoint
    from dqnfast.training import train
    from dqnfast.training.loop import TrainingDiverged

    update = Learner.update

    def poisoned(self, batch):  # from the 60th update (agent step ~340) the weights are NaN
        m = update(self, batch)
        if self.num_updates >= 60:
            with torch.no_grad():
                next(self.online.parameters()).fill_(math.nan)
        return m

    monkeypatch.setattr(Learner, "update", poisoned)
    cfg = cartpole(2000)
    cfg.logger = LoggerConfig(log_every=log_every, checkpoint_every=100, progress=False)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and caught_by in msg and "optim.lr" in msg and "agent step 400" in msg
    assert f"{tmp_path / 'checkpoint.pt'} (300 agent steps) is kept" in msg
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["counters"]["env_steps"] == 300 and all(torch.isfinite(t).all() for t in ck["online"].values())


# ------------------------------------------------------------------ SIGTERM in a long update burst
# ``python -m dqnfast.train`` as it is, plus one line on stderr after the learner's first update:
# from then on the run is inside a burst of ~6e7 updates (hours), so a signal sent on that line
# lands in the burst, whatever the machine's speed.
FIRST_UPDATE = "first update done"
_TRAIN_ANNOUNCING_THE_FIRST_UPDATE = f"""
import runpy, sys
from dqnfast.agent.dqn import Learner

update = Learner.update

def announced(self, batch):
    metrics = update(self, batch)
    if self.num_updates == 1:
        print({FIRST_UPDATE!r}, file=sys.stderr, flush=True)
    return metrics

Learner.update = announced
runpy.run_module("dqnfast.train", run_name="__main__", alter_sys=True)
"""


def test_sigterm_stops_a_long_update_burst_and_checkpoints(tmp_path):
    from dqnfast.checkpoint import load_checkpoint

    run = tmp_path / "run"
    overrides = tiny(algo__learning_starts=0, algo__replay_ratio="1e9", algo__total_steps=100_000)
    with open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _TRAIN_ANNOUNCING_THE_FIRST_UPDATE, *overrides, f"hydra.run.dir={run}"],
            cwd=tmp_path,
            env=ENV,
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
    lines: list[str] = []
    announced = threading.Event()

    def read_stderr() -> None:  # until the run exits; the line is the moment to signal
        for line in proc.stderr:
            lines.append(line)
            if line.strip() == FIRST_UPDATE:
                announced.set()
        announced.set()  # exited without it: the wait below ends and the poll fails the test

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        # the timeouts only turn a hang into a failure
        if not announced.wait(timeout=900) or proc.poll() is not None:
            pytest.fail("the run exited or hung before its first update: " + "".join(lines)[-3000:])
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=900)  # unfixed: the burst runs for hours
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM was not acted on inside the update burst")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
    err = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and "SIGTERM: stopped at" in (run / "train.log").read_text()
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["counters"]["updates"] > 0 and ck["counters"]["env_steps"] < 1000
    assert ck["loop"]["update_budget"] >= 1.0  # stopped inside the burst: the rest of it is owed


def _exact(total: int, checkpoint_every: int) -> Config:
    cfg = cartpole(total, save=True)
    cfg.envs.resume = "replay"
    cfg.algo.replay_ratio = 64.0  # 4 envs x 64 / 32 = 8 updates per iteration
    cfg.logger = LoggerConfig(log_every=100, checkpoint_every=checkpoint_every, progress=False)
    return cfg


@pytest.fixture(scope="module")
def never_stopped(tmp_path_factory):
    """``run(checkpoint_every)``: the run dir of the exact run of 600 agent steps never stopped,
    trained once per checkpoint period for the cases below."""
    from dqnfast.training import train

    runs: dict[int, Path] = {}

    def run(checkpoint_every: int) -> Path:
        if checkpoint_every not in runs:
            d = tmp_path_factory.mktemp(f"never_stopped_{checkpoint_every}")
            assert train(_exact(600, checkpoint_every), d)["updates"] == 1008
            runs[checkpoint_every] = d
        return runs[checkpoint_every]

    return run


@pytest.mark.parametrize(
    "stop_at, checkpoint_every, stopped_in",
    [
        (37, 0, "training"),  # 3 updates of a burst owed
        (205, 200, "training"),  # inside the burst of step 200, where a periodic checkpoint is due
        (1004, 0, "training"),  # inside the last burst (steps done, 4 updates owed)
        (1008, 0, "evaluation"),  # after the last update: the training is complete
    ],
)
def test_a_run_stopped_inside_a_burst_resumes_exactly(
    tmp_path, monkeypatch, never_stopped, stop_at, checkpoint_every, stopped_in
):
    """A SIGTERM at update ``stop_at`` of bursts of 8 (1008 updates in all); the resumed run
    pays what is owed, then the row and checkpoint of that step, before its first recv:
    metrics, every numbered checkpoint's weights and the final weights equal a run that was
    never stopped (exact resume: envs replayed, ring saved; CPU, one thread)."""
    import csv

    from dqnfast.agent.dqn import Learner
    from dqnfast.checkpoint import load_checkpoint, numbered_checkpoints
    from dqnfast.training import train

    def exact(total: int) -> Config:
        return _exact(total, checkpoint_every)

    def rows(run: Path) -> list[dict]:
        with open(run / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k not in ("sps", "time")} for r in csv.DictReader(f)]

    def same_weights(x: Path, y: Path) -> bool:
        cx, cy = load_checkpoint(x), load_checkpoint(y)
        same = all(torch.equal(cx["online"][k], cy["online"][k]) for k in cx["online"])
        return same and cx["counters"]["updates"] == cy["counters"]["updates"]

    a, b = never_stopped(checkpoint_every), tmp_path / "b"
    update = Learner.update

    def stopped_once(self, batch):
        m = update(self, batch)
        if self.num_updates == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler takes it
        return m

    monkeypatch.setattr(Learner, "update", stopped_once)
    summary = train(exact(600), b)
    monkeypatch.undo()
    assert summary["interrupted"] == "SIGTERM" and summary["stopped_in"] == stopped_in
    assert summary["updates"] == stop_at and not (b / "eval.json").exists()
    if stopped_in == "training":
        assert load_checkpoint(b / "checkpoint.pt")["loop"]["update_budget"] >= 3.0  # the rest of the burst is owed
    done = train(exact(600), b, resume=b)
    assert done["stopped_in"] is None and done["eval"] is not None
    assert rows(b) == rows(a)
    assert same_weights(a / "checkpoint.pt", b / "checkpoint.pt")
    numbered = [p.name for _, p in numbered_checkpoints(a)]  # b may also keep its stop's checkpoint
    assert set(numbered) <= {p.name for _, p in numbered_checkpoints(b)}
    assert all(same_weights(a / "checkpoints" / n, b / "checkpoints" / n) for n in numbered)


# ------------------------------------------------------------------ disk full
class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes have been written."""

    def __init__(self, f, room: int) -> None:
        self._f, self._room = f, room

    def write(self, b) -> int:
        if len(b) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(b)
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_disk(monkeypatch, room: int = 4096) -> None:
    import builtins

    import dqnfast.atomic

    monkeypatch.setattr(dqnfast.atomic, "open", lambda *a, **k: _FullDisk(builtins.open(*a, **k), room), raising=False)


def cartpole(total_steps: int, **replay) -> Config:
    return Config(
        game="CartPole",
        device="cpu",
        torch_threads=1,
        envs=EnvsConfig(num_envs=4, num_threads=1, eval=EvalProtocolConfig(episodes=1, num_envs=1)),
        algo=AlgoConfig(total_steps=total_steps, learning_starts=100, batch_size=32, replay_ratio=8),
        replay=ReplayConfig(capacity=2000, num_threads=1, **replay),
        logger=LoggerConfig(log_every=100, checkpoint_every=0, progress=False),
    )


@pytest.mark.parametrize("save_ring", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays_the_newest(tmp_path, monkeypatch, save_ring):
    from dqnfast.atomic import DiskFullError
    from dqnfast.checkpoint import load_checkpoint, numbered_checkpoints
    from dqnfast.training import train

    train(cartpole(200, save=save_ring), tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "wandb" not in p.parts)
    full_disk(monkeypatch)
    with pytest.raises(DiskFullError) as e:
        train(cartpole(400, save=save_ring), tmp_path, resume=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("disk full: writing ")
    assert "checkpoint needs about" in msg and "MB free" in msg
    assert f"{tmp_path / 'checkpoint.pt'} (200 agent steps) is kept and stays the newest" in msg
    assert f"resume={tmp_path}" in msg
    assert load_checkpoint(tmp_path / "checkpoint.pt")["counters"]["env_steps"] == 200
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [200]
    after = sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and "wandb" not in p.parts)
    assert [n for n in after if n.endswith((".pt", ".npz")) or TEMP_MARK in n] == [
        n for n in before if n.endswith((".pt", ".npz"))
    ]
    monkeypatch.undo()  # space again: the run continues from the kept checkpoint
    assert train(cartpole(400, save=save_ring), tmp_path, resume=tmp_path)["env_steps"] == 400


_CLI_ON_A_FULL_DISK = """
import builtins, errno, os, sys
sys.path.insert(0, {tests!r})
import dqnfast.atomic
from test_limits import _FullDisk
dqnfast.atomic.open = lambda *a, **k: _FullDisk(builtins.open(*a, **k), 4096)
from dqnfast.cli.train import cli
sys.argv = ["train", *{args!r}]
cli()
"""


def test_cli_on_a_full_disk_exits_with_one_line(tmp_path):
    run = tmp_path / "run"
    script = _CLI_ON_A_FULL_DISK.format(tests=str(Path(__file__).parent), args=[*TINY, f"hydra.run.dir={run}"])
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = one_line_error(proc.stderr)
    assert line.startswith(f"error: disk full: writing {run / 'checkpoints' / 'step_000000000200.pt'} failed")
    assert "no checkpoint of this run has been written yet" in line
    assert not list(run.rglob(f"*{TEMP_MARK}*"))


def test_a_real_small_tmpfs_fills_up_in_one_line(tmp_path):
    """Where unprivileged mounts are allowed (user namespaces): a 1 MiB tmpfs as the run dir."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1) to mount a private tmpfs")
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m none {tmp_path}"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({' '.join(probe.stderr.split())[:120]})")
    run = tmp_path / "run"
    # a ring file keeps every slot's metadata (9 bytes) but only the frames written: with 60000 slots
    # the newest ring file and the one being written do not fit in 1 MiB together
    inner = (
        f"mount -t tmpfs -o size=1m none {tmp_path} && mkdir {run} && cd {tmp_path} && "
        f"{sys.executable} -m dqnfast.train "
        f"{' '.join(tiny(logger__checkpoint_every=100, replay__save='true', replay__capacity=60000))} "
        f"hydra.run.dir={run}; echo rc=$?; "
        f"ls -a {run} {run}/checkpoints"
    )
    proc = subprocess.run([unshare, "-rm", "sh", "-c", inner], env=ENV, capture_output=True, text=True, timeout=900)
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    line = one_line_error(proc.stderr)
    assert "disk full" in line and ("stays the newest" in line or "no checkpoint" in line), line
    assert TEMP_MARK not in proc.stdout
