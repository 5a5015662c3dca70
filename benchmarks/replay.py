"""Replay sampling throughput and memory: dqnfast's C++ ring against the alternatives.

Measured side by side in one run, for Atari observations (uint8[4, 84, 84]) at batch sizes B
and gather threads 1..cores:

    dqnfast      ReplayRing.sample(B, out=batch) into a reused batch from make_batch
                 (obs and next_obs delivered as torch uint8 tensors), num_envs envs; the
                 default batch has shared rows (obs and next_obs [B, 4, 84, 84] are views of
                 one [B, 5, 84, 84] window: 5 frames gathered per transition, not 8)
    dqnfast-separate  the same ring into separate obs and next_obs tensors (8 frames)
    sb3          stable_baselines3 ReplayBuffer.sample(B) -> torch tensors, n_envs=1 as in
                 CleanRL's dqn_atari.py, optimize_memory_usage False ("sb3") and True
                 ("sb3-optmem", CleanRL's setting); handle_timeout_termination=False;
                 "sb3-optmem-dm": CleanRL's setting with glibc's default malloc (see MALLOC_ENV)
    reference    dqnfast.replay.reference.ReferenceRing.sample(B) -> numpy arrays
    memcpy       one contiguous copy of B * 2 * 28224 bytes (obs + next_obs of one batch)
                 from a random 64-byte-aligned offset of a 2 GiB source into a reused
                 destination: numpy single thread (the reference limit) and torch copy_
                 with T threads (context)

Prioritized replay (proportional, alpha 0.6, beta 0.4), side by side with dqnfast's uniform
sampling above: "sample" draws B transitions and delivers obs + next_obs + importance weights,
"update" sets new priorities for the same B indices.

    dqnfast-per  ReplayRing(prioritized=True): the C++ sum tree, sample(B, out=batch, beta)
                 and update_priorities(index, |TD|, generation)
    numpy-per    dqnfast.replay.reference.PrioritizedReference: a NumPy sum tree (vectorised
                 stratified descent) over the NumPy ring
    torchrl-per  TorchRL's PrioritizedReplayBuffer over a LazyTensorStorage of obs and
                 next_obs stacks: sample(B), update_priority(index, priority)
    cpprb-per    cpprb's PrioritizedReplayBuffer with next_of="obs" (each stack stored once):
                 sample(B, beta), update_priorities(indexes, priorities)

TorchRL and cpprb store stacks (56 KB and 28 KB per Atari transition), so they run at
--per-capacity and their 1M memory is computed from their array sizes, as dqnfast's and the
NumPy tree's are; each is skipped, with the reason printed, when it cannot be used (cpprb is
in the ``bench`` extra; torchrl 0.14.1's C++ segment trees do not load with torch 2.13).

Each buffer lives in its own spawned subprocess, so only one is allocated at a time and its
resident memory (VmRSS) can be measured cleanly: the dqnfast ring's RSS after filling it
completely is the memory figure (target <= 7.3 GB at 1M transitions). SB3 cannot hold 1M
Atari transitions in 24 GB (56 GB, or 28 GB with optimize_memory_usage), so it runs at
--sb3-capacity and its 1M figure is computed from its array sizes (and its measured RSS,
scaled per transition). Sampling speed hardly depends on capacity once the buffer is far
larger than the caches.

Buffers are filled before timing with real Pong-v5 frames from envpool (a pool of 4096
newest frames cycled; --frames random for random bytes) and realistic episode boundaries
(episodes of 500..1500 steps, 10% of them truncated, sparse +-1 rewards).

    python benchmarks/replay.py                 # full run (~3 min idle 2-core box, ~12 GB peak RAM)
    python benchmarks/replay.py --quick         # seconds: smoke test
    python benchmarks/replay.py --threads 1 --batch-sizes 256 --capacity 200000

Prints a table and ``NAME = value unit`` lines; saves JSON (default
benchmarks/results/replay.json).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import (  # noqa: E402
    Metrics,
    cpu_count,
    machine_info,
    mem_available_bytes,
    print_table,
    release_free_memory,
    rss_bytes,
    save_json,
    time_rate,
)

FRAME_SHAPE = (84, 84)
STACK = 4
FRAME_BYTES = 84 * 84
OBS_BYTES = STACK * FRAME_BYTES  # 28224
GB = 1e9
RSS_TARGET_GB = 7.3  # 1M-transition ring, resident after a complete fill
HEADLINE_B = 256
MEMCPY_SRC_BYTES = 2 << 30
# Worker processes run with a fixed glibc malloc tuning: blocks up to 32 MiB come from the heap
# and the heap is never trimmed. With the defaults (a dynamic mmap threshold and trimming),
# whether SB3's and the reference ring's freshly allocated outputs (7-58 MB a call) are
# page-faulted in again on every call depends on the allocation history: we measured the same
# SB3 sample(256) at 1.4 ms or 4-10 ms from run to run. Fixed tuning makes the baselines
# fault-free and their figures reproducible (the conservative choice for ratios against them);
# dqnfast samples into a reused batch and allocates nothing per call either way.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


# ----------------------------------------------------------------------------- data
def make_frames(kind: str, n: int, seed: int) -> tuple[np.ndarray, str]:
    """uint8[n, 84, 84] frames: envpool Pong-v5 newest frames, or random bytes."""
    if kind == "pong":
        try:
            import envpool

            num_envs = 8
            env = envpool.make(
                "Pong-v5",
                env_type="gymnasium",
                num_envs=num_envs,
                batch_size=num_envs,
                num_threads=min(num_envs, cpu_count()),
                seed=seed,
            )
            rng = np.random.default_rng(seed)
            obs, _ = env.reset()
            out = np.empty((n, *FRAME_SHAPE), np.uint8)
            k = 0
            while k < n:
                obs, *_ = env.step(rng.integers(0, env.action_space.n, num_envs))
                take = min(num_envs, n - k)
                out[k : k + take] = obs[:take, -1]
                k += take
            env.close()
            return out, "envpool Pong-v5 (random actions), newest frame of each observation"
        except Exception as e:  # noqa: BLE001 - any envpool trouble: fall back, say so
            print(f"note: envpool Pong frames unavailable ({type(e).__name__}: {e}); using random bytes")
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *FRAME_SHAPE), dtype=np.uint8), "random bytes"


def make_schedule(steps: int, num_envs: int, episode_len: int, seed: int) -> dict[str, np.ndarray]:
    """Per-step, per-env actions, rewards and episode flags ([steps, num_envs] each).

    Episodes last uniform[episode_len/2, 3*episode_len/2] steps; the first step of each has
    first=True (the reset observation, reward 0), the last terminated=True (or truncated=True
    for 10% of episodes). Rewards are sparse +-1, as in Pong.
    """
    rng = np.random.default_rng(seed)
    shape = (steps, num_envs)
    sch = {
        "actions": rng.integers(0, 6, shape, dtype=np.int64),
        "rewards": (rng.random(shape) < 0.02).astype(np.float32) * rng.choice([-1.0, 1.0], shape).astype(np.float32),
        "terminated": np.zeros(shape, bool),
        "truncated": np.zeros(shape, bool),
        "first": np.zeros(shape, bool),
    }
    lo, hi = max(2, episode_len // 2), max(3, 3 * episode_len // 2)
    for e in range(num_envs):
        t = 0
        while t < steps:
            sch["first"][t, e] = True
            sch["rewards"][t, e] = 0.0
            end = t + int(rng.integers(lo, hi + 1)) - 1
            if end < steps:
                (sch["truncated"] if rng.random() < 0.1 else sch["terminated"])[end, e] = True
            t = end + 1
    return sch


# -------------------------------------------------------------------------- workers
# Each runs in a fresh spawned process (see _run_isolated) and returns plain dicts.


def fill_ring(ring, frames: np.ndarray, sch: dict[str, np.ndarray], ids: np.ndarray, steps: int) -> float:
    """Adds ``steps`` steps for all envs (frames cycled from the pool); returns the seconds it took."""
    num_envs, n_pool = len(ids), len(frames) - len(ids)
    t0 = time.perf_counter()
    for s in range(steps):
        j = (s * num_envs) % n_pool
        ring.add(
            ids,
            frames[j : j + num_envs],
            sch["actions"][s],
            sch["rewards"][s],
            sch["terminated"][s],
            sch["truncated"][s],
            sch["first"][s],
        )
    return time.perf_counter() - t0


def _set_torch_threads(t: int) -> None:
    import torch

    torch.set_num_threads(t)


def _row(impl: str, batch: int, threads, capacity, timing: dict, bytes_per_transition=None, **kw) -> dict:
    return {
        "impl": impl,
        "batch_size": batch,
        "threads": threads,
        "capacity": capacity,
        "samples_per_s": timing["rate"],
        "samples_per_s_min": timing["rate_min"],
        "samples_per_s_max": timing["rate_max"],
        "samples_per_s_reps": timing["rates"],
        "ms_per_batch": timing["sec_per_call"] * 1e3,
        "obs_gb_per_s": timing["rate"] * 2 * OBS_BYTES / GB,
        "bytes_per_transition": bytes_per_transition,
        "foreign_cores": timing["foreign_cores"],
        "page_faults_per_call": timing["page_faults_per_call"],
        "clean": timing["clean"],
        "reps_discarded": timing["reps_discarded"],
        "reps_all": timing["reps_all"],
        **kw,
    }


def _filled(cfg: dict, make) -> tuple:
    """The benchmark's workload: ``make(capacity, num_envs)`` builds the ring (returns it, or
    (ring, what to fill) when a sampler wraps it), which is then filled with the recorded
    frames until every slot is written and the ring has wrapped.

    Returns (ring, filled, steps, fill seconds, RSS before the ring, RSS after its allocation).
    """
    frames = np.load(cfg["frames_path"])
    num_envs, cap = cfg["num_envs"], cfg["capacity"]
    seg = cap // num_envs
    steps = seg + max(64, seg // 50)  # every slot written, and the ring has wrapped
    sch = make_schedule(steps, num_envs, cfg["episode_len"], cfg["seed"])
    ids = np.arange(num_envs, dtype=np.int64)
    release_free_memory()
    rss0 = rss_bytes()
    made = make(cap, num_envs)
    ring, target = made if isinstance(made, tuple) else (made, made)
    rss_alloc = rss_bytes()
    fill_s = fill_ring(target, frames, sch, ids, steps)
    return ring, target, steps, fill_s, rss0, rss_alloc


def _memory(capacity: int, rss0: int, rss_full: int, fill_s: float, adds: int, nominal: int | None = None, **extra):
    """A buffer's memory figures: RSS growth while filling it, its nominal size (when known), fill speed."""
    mem = {
        "capacity": capacity,
        "rss_ring_bytes": rss_full - rss0,
        "rss_bytes_per_transition": (rss_full - rss0) / capacity,
        "fill_seconds": fill_s,
        "adds_per_s": adds / fill_s,
        **extra,
    }
    if nominal is not None:
        mem["nominal_bytes_per_transition"] = nominal / capacity
    return mem


def worker_dqnfast(cfg: dict) -> dict:
    """Fills a ReplayRing with num_threads=T, measures its RSS, times sample(B, out=batch)."""
    import torch

    from dqnfast.replay import ReplayRing

    t_threads = cfg["threads"]
    torch.set_num_threads(t_threads)
    ring, _, steps, fill_s, rss0, rss_alloc = _filled(
        cfg,
        lambda cap, n: ReplayRing(
            cap, n, FRAME_SHAPE, np.uint8, stack=STACK, n_step=1, gamma=0.99, seed=cfg["seed"], num_threads=t_threads
        ),
    )
    rss_full = rss_bytes()
    mem = _memory(
        ring.capacity,
        rss0,
        rss_full,
        fill_s,
        steps,
        ring.nbytes,
        rss_before_bytes=rss0,
        rss_after_alloc_bytes=rss_alloc,
        rss_after_fill_bytes=rss_full,
        nominal_bytes=ring.nbytes,
        num_valid=ring.num_valid(),
    )
    rows = []
    for b in cfg["batch_sizes"]:
        # dqnfast: the default batch (shared rows: obs and next_obs are views of one window of 5
        # frames); dqnfast-separate: obs and next_obs gathered into two tensors (8 frames)
        for impl, shared in (("dqnfast", None), ("dqnfast-separate", False)):
            batch = ring.make_batch(b, shared=shared)
            timing = time_rate(
                lambda b=b, batch=batch: ring.sample(b, out=batch),
                b,
                cfg["min_time"],
                cfg["reps"],
                max_retries=cfg["max_retries"],
                quiet_wait=cfg["quiet_wait"],
            )
            rows.append(
                _row(
                    impl,
                    b,
                    t_threads,
                    ring.capacity,
                    timing,
                    mem["rss_bytes_per_transition"],
                    num_envs=cfg["num_envs"],
                    shared_rows=batch.frames is not None,
                )
            )
            del batch
    return {"rows": rows, "memory": mem}


def worker_reference(cfg: dict) -> dict:
    """Fills the NumPy ReferenceRing the same way and times sample(B) (numpy, one thread)."""
    from dqnfast.replay.reference import ReferenceRing

    ring, _, steps, fill_s, rss0, _ = _filled(
        cfg,
        lambda cap, n: ReferenceRing(
            cap, n, FRAME_SHAPE, np.uint8, stack=STACK, n_step=1, gamma=0.99, seed=cfg["seed"]
        ),
    )
    num_envs = cfg["num_envs"]
    ring.sample(1)  # builds the valid-index cache once (not part of sampling cost)
    rss_full = rss_bytes()
    capacity = ring.segment_capacity * num_envs
    mem = _memory(capacity, rss0, rss_full, fill_s, steps)
    rows = []
    for b in cfg["batch_sizes"]:
        timing = time_rate(
            lambda b=b: ring.sample(b),
            b,
            cfg["min_time"],
            cfg["reps"],
            max_retries=cfg["max_retries"],
            quiet_wait=cfg["quiet_wait"],
        )
        rows.append(_row("reference", b, 1, capacity, timing, mem["rss_bytes_per_transition"], num_envs=num_envs))
    return {"rows": rows, "memory": mem}


def worker_sb3(cfg: dict) -> dict:
    """Fills SB3's ReplayBuffer (n_envs=1, CleanRL's way) and times sample(B) at each T."""
    import gymnasium.spaces as spaces
    import torch
    from stable_baselines3.common.buffers import ReplayBuffer

    opt = cfg["optimize_memory_usage"]
    frames = np.load(cfg["frames_path"])
    # stacks[i] = frames[i:i+4], a zero-copy strided view: the observation envpool would return
    n_stacks = frames.shape[0] - STACK
    stacks = np.lib.stride_tricks.as_strided(
        frames, (n_stacks + 1, STACK, *FRAME_SHAPE), (FRAME_BYTES, FRAME_BYTES, 84, 1), writeable=False
    )
    cap = cfg["capacity"]
    steps = cap + max(64, cap // 50)
    sch = make_schedule(steps, 1, cfg["episode_len"], cfg["seed"])
    np.random.seed(cfg["seed"])  # SB3 samples with the global numpy RNG

    release_free_memory()
    rss0 = rss_bytes()
    rb = ReplayBuffer(
        cap,
        spaces.Box(0, 255, (STACK, *FRAME_SHAPE), np.uint8),
        spaces.Discrete(6),
        device="cpu",
        n_envs=1,
        optimize_memory_usage=opt,
        handle_timeout_termination=False,
    )
    arrays = [rb.observations, rb.actions, rb.rewards, rb.dones, rb.timeouts]
    if not opt:
        arrays.append(rb.next_observations)
    nominal = sum(a.nbytes for a in arrays)
    t0 = time.perf_counter()
    for s in range(steps):
        i = s % n_stacks
        done = bool(sch["terminated"][s, 0] or sch["truncated"][s, 0])
        rb.add(stacks[i][None], stacks[i + 1][None], sch["actions"][s], sch["rewards"][s], np.array([done]), [{}])
    fill_s = time.perf_counter() - t0
    rss_full = rss_bytes()
    del sch
    mem = _memory(rb.buffer_size, rss0, rss_full, fill_s, steps, nominal, nominal_bytes=nominal)
    name = cfg.get("name") or ("sb3-optmem" if opt else "sb3")
    rows = []
    for t in cfg["threads_list"]:
        torch.set_num_threads(t)
        for b in cfg["batch_sizes"]:
            timing = time_rate(
                lambda b=b: rb.sample(b),
                b,
                cfg["min_time"],
                cfg["reps"],
                max_retries=cfg["max_retries"],
                quiet_wait=cfg["quiet_wait"],
            )
            rows.append(_row(name, b, t, rb.buffer_size, timing, mem["nominal_bytes_per_transition"], n_envs=1))
    return {"rows": rows, "memory": mem}


# ------------------------------------------------------------- prioritized replay workers
PER_ALPHA, PER_BETA = 0.6, 0.4  # Schaul et al. 2016's proportional variant, for every contender


def _time(cfg: dict, fn, work: int) -> dict:
    return time_rate(
        fn, work, cfg["min_time"], cfg["reps"], max_retries=cfg["max_retries"], quiet_wait=cfg["quiet_wait"]
    )


def _per_rows(impl: str, b: int, threads, capacity, t_sample: dict, t_update: dict, bpt, **kw) -> list[dict]:
    return [
        _row(impl, b, threads, capacity, t_sample, bpt, op="sample", **kw),
        _row(f"{impl}-update", b, threads, capacity, t_update, bpt, op="update", **kw),
    ]


def worker_dqnfast_per(cfg: dict) -> dict:
    """A prioritized ReplayRing: sample(B, beta) (obs + next_obs + weights) and update_priorities of the batch."""
    import torch

    from dqnfast.replay import ReplayRing

    t_threads = cfg["threads"]
    torch.set_num_threads(t_threads)
    ring, _, steps, fill_s, rss0, _ = _filled(
        cfg,
        lambda cap, n: ReplayRing(
            cap,
            n,
            FRAME_SHAPE,
            np.uint8,
            stack=STACK,
            n_step=1,
            gamma=0.99,
            seed=cfg["seed"],
            num_threads=t_threads,
            prioritized=True,
            alpha=PER_ALPHA,
        ),
    )
    rss_full = rss_bytes()
    mem = _memory(ring.capacity, rss0, rss_full, fill_s, steps, ring.nbytes)
    rng = np.random.default_rng(cfg["seed"])
    rows = []
    for b in cfg["batch_sizes"]:
        batch = ring.make_batch(b)
        t_sample = _time(cfg, lambda b=b, batch=batch: ring.sample(b, out=batch, beta=PER_BETA), b)
        idx, gen = batch.index.numpy().copy(), batch.generation.numpy().copy()
        td = rng.exponential(1.0, b).astype(np.float32)
        t_update = _time(cfg, lambda idx=idx, td=td, gen=gen: ring.update_priorities(idx, td, gen), b)
        rows += _per_rows(
            "dqnfast-per", b, t_threads, ring.capacity, t_sample, t_update, mem["nominal_bytes_per_transition"]
        )
    return {"rows": rows, "memory": mem}


def worker_numpy_per(cfg: dict) -> dict:
    """dqnfast.replay.reference's NumPy sum tree over the NumPy ring: stratified sample + gather + weights, update."""
    from dqnfast.replay.reference import PrioritizedReference, ReferenceRing

    def make(cap: int, n: int) -> tuple:
        ring = ReferenceRing(cap, n, FRAME_SHAPE, np.uint8, stack=STACK, n_step=1, gamma=0.99, seed=cfg["seed"])
        return ring, PrioritizedReference(ring, alpha=PER_ALPHA, seed=cfg["seed"])

    ring, per, steps, fill_s, rss0, _ = _filled(cfg, make)
    num_envs = cfg["num_envs"]
    per.sample(1, PER_BETA)  # builds the valid mask and the tree once (not part of sampling cost)
    rss_full = rss_bytes()
    capacity = ring.segment_capacity * num_envs
    arrays = (ring.frames, ring.actions, ring.rewards, ring.terminated, ring.truncated, ring.first)
    nominal = sum(a.nbytes for a in arrays) + per.priority.nbytes + per.tree.tree.nbytes
    mem = _memory(capacity, rss0, rss_full, fill_s, steps, nominal)
    rng = np.random.default_rng(cfg["seed"])
    rows = []
    for b in cfg["batch_sizes"]:
        t_sample = _time(cfg, lambda b=b: per.sample(b, PER_BETA), b)
        s = per.sample(b, PER_BETA)
        idx, gen, td = s["index"], s["generation"], rng.exponential(1.0, b)
        t_update = _time(cfg, lambda idx=idx, td=td, gen=gen: per.update(idx, td, gen), b)
        rows += _per_rows("numpy-per", b, 1, capacity, t_sample, t_update, mem["nominal_bytes_per_transition"])
    return {"rows": rows, "memory": mem}


def _stacks(frames: np.ndarray) -> np.ndarray:
    """stacks[i] = frames[i:i+4] as a zero-copy strided view: the observation envpool would return."""
    n = frames.shape[0] - STACK
    return np.lib.stride_tricks.as_strided(
        frames, (n + 1, STACK, *FRAME_SHAPE), (FRAME_BYTES, FRAME_BYTES, 84, 1), writeable=False
    )


def worker_torchrl_per(cfg: dict) -> dict:
    """TorchRL's PrioritizedReplayBuffer over a LazyTensorStorage of obs and next_obs stacks.

    Not run where ``probe_torchrl_per`` fails: torchrl 0.14.1, the newest, installs with
    torch 2.13.0 but its C++ extension, which holds the segment trees, does not load.
    """
    import torch
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, PrioritizedReplayBuffer

    t_threads = cfg["threads"]
    torch.set_num_threads(t_threads)
    stacks = _stacks(np.load(cfg["frames_path"]))
    cap = cfg["capacity"]
    sch = make_schedule(cap, 1, cfg["episode_len"], cfg["seed"])
    release_free_memory()
    rss0 = rss_bytes()
    rb = PrioritizedReplayBuffer(alpha=PER_ALPHA, beta=PER_BETA, storage=LazyTensorStorage(cap), eps=1e-6)
    chunk, n_stacks = 256, stacks.shape[0] - 1
    t0 = time.perf_counter()
    for s in range(0, cap, chunk):
        k = min(chunk, cap - s)
        pos = (np.arange(s, s + k) % n_stacks).astype(np.int64)
        rb.extend(
            TensorDict(
                {
                    "obs": torch.from_numpy(stacks[pos]),
                    "next_obs": torch.from_numpy(stacks[pos + 1]),
                    "action": torch.from_numpy(sch["actions"][s : s + k, 0]),
                    "reward": torch.from_numpy(sch["rewards"][s : s + k, 0]),
                    "done": torch.from_numpy(sch["terminated"][s : s + k, 0] | sch["truncated"][s : s + k, 0]),
                },
                batch_size=[k],
            )
        )
    fill_s = time.perf_counter() - t0
    rss_full = rss_bytes()
    storage_bytes = sum(v.numel() * v.element_size() for v in rb.storage._storage.values(True, True))
    # the sampler's sum and min segment trees: float32, 2 x capacity nodes each (torchrl's C++ trees)
    nominal = storage_bytes + 2 * 2 * 4 * cap
    mem = _memory(cap, rss0, rss_full, fill_s, cap, nominal)
    rng = np.random.default_rng(cfg["seed"])
    rows = []
    for b in cfg["batch_sizes"]:
        # return_info: the indices and importance weights ("index", "_weight") beside the data
        t_sample = _time(cfg, lambda b=b: rb.sample(b, return_info=True), b)
        idx = rb.sample(b, return_info=True)[1]["index"]
        td = torch.from_numpy(rng.exponential(1.0, b).astype(np.float32))
        t_update = _time(cfg, lambda idx=idx, td=td: rb.update_priority(idx, td), b)
        rows += _per_rows("torchrl-per", b, t_threads, cap, t_sample, t_update, mem["nominal_bytes_per_transition"])
    return {"rows": rows, "memory": mem}


def worker_cpprb_per(cfg: dict) -> dict:
    """cpprb's PrioritizedReplayBuffer (C++ segment trees), obs stored once with next_of="obs"."""
    from cpprb import PrioritizedReplayBuffer

    stacks = _stacks(np.load(cfg["frames_path"]))
    cap = cfg["capacity"]
    sch = make_schedule(cap, 1, cfg["episode_len"], cfg["seed"])
    release_free_memory()
    rss0 = rss_bytes()
    env_dict = {
        "obs": {"shape": (STACK, *FRAME_SHAPE), "dtype": np.uint8},
        "act": {"shape": 1, "dtype": np.int64},
        "rew": {"shape": 1, "dtype": np.float32},
        "done": {"shape": 1, "dtype": np.float32},
    }
    rb = PrioritizedReplayBuffer(cap, env_dict, next_of="obs", alpha=PER_ALPHA, eps=1e-6)
    chunk, n_stacks = 256, stacks.shape[0] - 1
    t0 = time.perf_counter()
    for s in range(0, cap, chunk):
        k = min(chunk, cap - s)
        pos = (np.arange(s, s + k) % n_stacks).astype(np.int64)
        rb.add(
            obs=stacks[pos],
            next_obs=stacks[pos + 1],
            act=sch["actions"][s : s + k, 0],
            rew=sch["rewards"][s : s + k, 0],
            done=(sch["terminated"][s : s + k, 0] | sch["truncated"][s : s + k, 0]).astype(np.float32),
        )
    fill_s = time.perf_counter() - t0
    rss_full = rss_bytes()
    # obs once per transition (+ one next_obs row), action, reward, done; sum and min trees (float32, 2 x cap)
    nominal = (cap + 1) * OBS_BYTES + cap * (8 + 4 + 4) + 2 * 2 * 4 * cap
    mem = _memory(cap, rss0, rss_full, fill_s, cap, nominal)
    rng = np.random.default_rng(cfg["seed"])
    rows = []
    for b in cfg["batch_sizes"]:
        t_sample = _time(cfg, lambda b=b: rb.sample(b, beta=PER_BETA), b)
        idx = rb.sample(b, beta=PER_BETA)["indexes"]
        td = rng.exponential(1.0, b)
        t_update = _time(cfg, lambda idx=idx, td=td: rb.update_priorities(idx, td), b)
        rows += _per_rows("cpprb-per", b, 1, cap, t_sample, t_update, mem["nominal_bytes_per_transition"])
    return {"rows": rows, "memory": mem}


def worker_memcpy(cfg: dict) -> dict:
    """One contiguous copy of a batch's obs+next_obs bytes from a random offset of a big source."""
    import torch

    src = np.empty(cfg["src_bytes"], np.uint8)
    src.fill(0x5A)  # touch every page: an untouched one would read the shared zero page
    src_t = torch.from_numpy(src)
    rng = np.random.default_rng(cfg["seed"])
    rows = []
    for b in cfg["batch_sizes"]:
        n = b * 2 * OBS_BYTES
        dst = np.zeros(n, np.uint8)
        dst_t = torch.from_numpy(dst)
        offs = (rng.integers(0, (src.size - n) // 64, 4096) * 64).tolist()
        k = [0]

        def np_copy(dst=dst, n=n, offs=offs, k=k):
            o = offs[k[0] & 4095]
            k[0] += 1
            np.copyto(dst, src[o : o + n])

        timing = time_rate(
            np_copy, b, cfg["min_time"], cfg["reps"], max_retries=cfg["max_retries"], quiet_wait=cfg["quiet_wait"]
        )
        rows.append(_row("memcpy-numpy", b, 1, None, timing, None, copy_bytes=n))
        for t in cfg["threads_list"]:
            torch.set_num_threads(t)

            def torch_copy(dst_t=dst_t, n=n, offs=offs, k=k):
                o = offs[k[0] & 4095]
                k[0] += 1
                dst_t.copy_(src_t[o : o + n])

            timing = time_rate(
                torch_copy,
                b,
                cfg["min_time"],
                cfg["reps"],
                max_retries=cfg["max_retries"],
                quiet_wait=cfg["quiet_wait"],
            )
            rows.append(_row("memcpy-torch", b, t, None, timing, None, copy_bytes=n))
    return {"rows": rows}


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    if "undefined symbol" in msg:  # a C++ extension built against another torch
        return f"{type(e).__name__}: undefined symbol in its C++ extension, which was built for another torch version"
    return f"{type(e).__name__}: {msg[:160]}"


def probe_torchrl_per(cfg: dict) -> dict:
    """Whether TorchRL's PrioritizedReplayBuffer works here: {"error": None} or why not."""
    try:
        import torch
        import torchrl
    except Exception as e:  # noqa: BLE001 - a broken install fails in many ways; report it
        return {"error": f"torchrl cannot be imported ({_short(e)})"}
    try:  # its sum/min segment trees live in torchrl's C++ extension; without it there is no PER
        import torchrl._torchrl  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return {
            "error": f"torchrl {torchrl.__version__}'s C++ extension (the segment trees of its "
            f"PrioritizedReplayBuffer) does not load with torch {torch.__version__} ({_short(e)})"
        }
    try:
        from torchrl.data import LazyTensorStorage, PrioritizedReplayBuffer

        rb = PrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(8))
        rb.extend(torch.zeros(8, 2))
        rb.sample(2)
    except Exception as e:  # noqa: BLE001
        return {"error": f"torchrl {torchrl.__version__}'s PrioritizedReplayBuffer fails ({_short(e)})"}
    return {"error": None}


def probe_cpprb_per(cfg: dict) -> dict:
    """Whether cpprb's PrioritizedReplayBuffer works here: {"error": None} or why not."""
    try:
        from cpprb import PrioritizedReplayBuffer

        rb = PrioritizedReplayBuffer(8, {"obs": {"shape": 2}}, alpha=0.6)
        rb.add(obs=np.zeros((8, 2)))
        rb.sample(2, beta=0.4)
    except Exception as e:  # noqa: BLE001 - a broken install fails in many ways; report it
        return {"error": f"cpprb's PrioritizedReplayBuffer is not usable ({_short(e)})"}
    return {"error": None}


def _run_isolated(fn, cfg: dict) -> dict:
    """Runs fn(cfg) in a fresh spawned process: its memory is all returned when it exits."""
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(fn, cfg).result()


# ----------------------------------------------------------------------------- main
def _parse_ints(s: str) -> list[int]:
    return [int(x) for x in s.replace(",", " ").split()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and short timings (a few seconds): a smoke test, not a measurement",
    )
    p.add_argument(
        "--threads", type=_parse_ints, default=None, help="gather thread counts, e.g. '1,2' (default: 1..cores)"
    )
    p.add_argument("--batch-sizes", type=_parse_ints, default=None, help="default: 32,256,1024")
    p.add_argument(
        "--capacity", type=int, default=None, help="transitions in the dqnfast and reference rings (default 1,000,000)"
    )
    p.add_argument(
        "--sb3-capacity",
        type=int,
        default=None,
        help="transitions in SB3's buffers (default 200,000: 1M does not fit in RAM)",
    )
    p.add_argument(
        "--per-capacity",
        type=int,
        default=None,
        help="transitions in TorchRL's and cpprb's prioritized buffers (default 100,000: they store stacks; "
        "their 1M figures are computed from array sizes)",
    )
    p.add_argument("--num-envs", type=int, default=8, help="env streams of the dqnfast/reference rings")
    p.add_argument("--episode-len", type=int, default=1000, help="mean episode length in agent steps")
    p.add_argument(
        "--frames",
        choices=("pong", "random"),
        default=None,
        help="fill data: envpool Pong-v5 frames (default) or random bytes (--quick default)",
    )
    p.add_argument("--min-time", type=float, default=None, help="seconds per timing repetition (default 0.5)")
    p.add_argument("--reps", type=int, default=None, help="timing repetitions; the median is reported (default 5)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="seconds each row may wait for other processes to leave the CPU after a disturbed "
        "repetition (shared machines; 0 disables; --quick: 0)",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma list of impls to leave out: dqnfast,reference,sb3,sb3-optmem,sb3-optmem-dm,memcpy, and of "
        "the prioritized contenders: dqnfast-per,numpy-per,torchrl-per,cpprb-per (per: all four)",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc tuning in the workers (see MALLOC_ENV): SB3 may then "
        "re-fault its freshly allocated outputs on every call and run 2-5x slower",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(_HERE / "results" / "replay.json"), help="JSON output path")
    a = p.parse_args(argv)
    q = a.quick
    a.threads = a.threads or list(range(1, cpu_count() + 1))
    a.batch_sizes = a.batch_sizes or ([32, 256] if q else [32, 256, 1024])
    a.capacity = a.capacity or (20_000 if q else 1_000_000)
    a.sb3_capacity = a.sb3_capacity or (5_000 if q else 200_000)
    a.per_capacity = a.per_capacity or (5_000 if q else 100_000)
    a.frames = a.frames or ("random" if q else "pong")
    a.min_time = a.min_time if a.min_time is not None else (0.05 if q else 0.5)
    a.reps = a.reps or (1 if q else 5)
    a.max_retries = 0 if q else 2 * a.reps  # repeat repetitions disturbed by other processes
    a.quiet_wait = 0.0 if q else a.quiet_wait
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    a.memcpy_src_bytes = (256 << 20) if q else MEMCPY_SRC_BYTES
    if HEADLINE_B not in a.batch_sizes:
        print(f"note: B={HEADLINE_B} not in --batch-sizes: no headline ratios")
    return a


def _fit_capacity(name: str, want: int, bytes_per: float, notes: list[str], headroom: float = 2.5 * GB) -> int:
    """Largest capacity <= want whose buffer fits in the RAM available now, less headroom."""
    avail = mem_available_bytes() - headroom
    fit = int(max(0, avail) // bytes_per)
    if fit >= want:
        return want
    cap = max(1000, fit // 1000 * 1000)
    notes.append(f"{name}: capacity lowered from {want:,} to {cap:,} ({mem_available_bytes() / GB:.1f} GB available)")
    print("note:", notes[-1], flush=True)
    return cap


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    machine = machine_info(("torch", "numpy", "numba", "stable-baselines3", "envpool", "dqnfast"))
    cores = machine["cores"]
    print(
        f"replay benchmark: {machine['cpu_model']}, {cores} cores, {machine['ram_bytes'] / GB:.1f} GB RAM, "
        f"load average {machine['loadavg'][0]:.2f}, commit {str(machine['git_commit'])[:10]}",
        flush=True,
    )
    if machine["loadavg"][0] > 0.5:
        print(
            f"warning: load average {machine['loadavg'][0]:.2f} before start: other processes share the CPU; "
            "timings will be noisy",
            flush=True,
        )
    notes: list[str] = []
    if not args.default_malloc:
        os.environ.update(MALLOC_ENV)  # inherited by the spawned workers
    if max(args.threads) > cores:
        notes.append(f"threads {args.threads} exceed the {cores} cores available")

    frames, frames_desc = make_frames(args.frames, 4096, args.seed)
    tmpdir = tempfile.TemporaryDirectory(prefix="dqnfast_bench_")
    frames_path = os.path.join(tmpdir.name, "frames.npy")
    np.save(frames_path, frames)
    del frames

    base = {
        "frames_path": frames_path,
        "batch_sizes": args.batch_sizes,
        "min_time": args.min_time,
        "reps": args.reps,
        "max_retries": args.max_retries,
        "quiet_wait": args.quiet_wait,
        "seed": args.seed,
        "episode_len": args.episode_len,
        "threads_list": args.threads,
    }
    rows: list[dict] = []
    memory: dict[str, dict] = {}
    dq_bpt = 7100.0  # bytes per slot, for the fit check (exact: dqnfast._core.bytes_per_slot)
    cap_dq = _fit_capacity("dqnfast/reference", args.capacity, dq_bpt * 1.01, notes)

    def run(name, fn, cfg, keep=True):
        """Runs one worker in its own process; keep: add its rows and memory to the uniform tables."""
        t0 = time.perf_counter()
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name} ...", flush=True)
        res = _run_isolated(fn, {**base, **cfg})
        print(f"[{time.perf_counter() - t_start:6.1f}s] {name} done in {time.perf_counter() - t0:.1f}s", flush=True)
        if keep:
            rows.extend(res.get("rows", []))
            if "memory" in res:
                memory[name] = res["memory"]
        return res

    try:
        if "memcpy" not in args.skip:
            run("memcpy", worker_memcpy, {"src_bytes": args.memcpy_src_bytes})
        if "dqnfast" not in args.skip:
            for t in args.threads:
                run(
                    f"dqnfast threads={t}",
                    worker_dqnfast,
                    {"threads": t, "capacity": cap_dq, "num_envs": args.num_envs},
                )
        if "reference" not in args.skip:
            run(
                "reference",
                worker_reference,
                {"capacity": _fit_capacity("reference", cap_dq, dq_bpt * 1.05, notes), "num_envs": args.num_envs},
            )
        for name, opt in (("sb3-optmem", True), ("sb3", False)):
            if name in args.skip:
                continue
            cap = _fit_capacity(name, args.sb3_capacity, OBS_BYTES * (1 if opt else 2) * 1.02, notes)
            run(name, worker_sb3, {"capacity": cap, "optimize_memory_usage": opt})
        if not args.default_malloc and "sb3-optmem-dm" not in args.skip:
            # CleanRL's configuration once more with glibc's default malloc (see MALLOC_ENV)
            saved = {k: os.environ.pop(k) for k in MALLOC_ENV if k in os.environ}
            try:
                cap = _fit_capacity("sb3-optmem-dm", args.sb3_capacity, OBS_BYTES * 1.02, notes)
                run(
                    "sb3-optmem-dm",
                    worker_sb3,
                    {"capacity": cap, "optimize_memory_usage": True, "name": "sb3-optmem-dm"},
                )
            finally:
                os.environ.update(saved)
        per_rows, per_memory, per_skipped = run_per(args, run, cap_dq, dq_bpt, notes)
    finally:
        tmpdir.cleanup()

    metrics = Metrics()
    summary = report(args, rows, memory, metrics, notes, cores)
    summary["prioritized"] = report_per(args, per_rows, rows, per_memory, per_skipped, metrics)
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()}
    config.update(
        {
            "frames_desc": frames_desc,
            "dqnfast_capacity": cap_dq,
            "obs_bytes": OBS_BYTES,
            "sb3_n_envs": 1,
            "wall_seconds": time.perf_counter() - t_start,
            "worker_malloc_env": {} if args.default_malloc else MALLOC_ENV,
        }
    )
    machine["loadavg_end"] = os.getloadavg()
    path = save_json(
        args.out,
        "replay",
        config=config,
        results=rows,
        prioritized_results=per_rows,
        metrics=metrics,
        machine=machine,
        memory={**memory, **{f"per:{k}": v for k, v in per_memory.items()}},
        summary=summary,
        notes=notes,
    )
    print(f"saved {path} ({time.perf_counter() - t_start:.0f}s)")
    return 0


# --------------------------------------------------------------------------- prioritized
PER_CONTENDERS = {  # impl: (worker, probe, how to get it)
    "torchrl-per": (worker_torchrl_per, probe_torchrl_per, "a torchrl built for this torch"),
    "cpprb-per": (worker_cpprb_per, probe_cpprb_per, "pip install cpprb (the bench extra)"),
}


def run_per(args, run, cap_dq: int, dq_bpt: float, notes: list[str]) -> tuple[list[dict], dict, dict]:
    """The prioritized contenders, each in its own process: rows, memory, and {impl: why skipped}."""
    rows: list[dict] = []
    memory: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    if "per" in args.skip:
        return rows, memory, {"all": "--skip per"}

    def keep(name: str, res: dict) -> None:
        rows.extend(res["rows"])
        memory[name] = res["memory"]

    if "dqnfast-per" not in args.skip:
        for t in args.threads:
            cfg = {"threads": t, "capacity": cap_dq, "num_envs": args.num_envs}
            keep(f"dqnfast-per threads={t}", run(f"dqnfast-per threads={t}", worker_dqnfast_per, cfg, keep=False))
    if "numpy-per" not in args.skip:
        cap = _fit_capacity("numpy-per", cap_dq, dq_bpt * 1.1, notes)
        keep("numpy-per", run("numpy-per", worker_numpy_per, {"capacity": cap, "num_envs": args.num_envs}, False))
    for impl, (fn, probe_fn, how) in PER_CONTENDERS.items():
        if impl in args.skip:
            skipped[impl] = "--skip"
            continue
        probe = _run_isolated(probe_fn, {})
        if probe["error"]:
            skipped[impl] = f"{probe['error']}; needs {how}"
            print(f"note: {impl} skipped: {skipped[impl]}", flush=True)
            notes.append(f"{impl} skipped: {skipped[impl]}")
            continue
        cap = _fit_capacity(impl, args.per_capacity, 2 * OBS_BYTES * 1.05, notes)
        threads = args.threads if impl == "torchrl-per" else [1]  # cpprb samples on one thread
        for t in threads:
            keep(f"{impl} threads={t}", run(f"{impl} threads={t}", fn, {"threads": t, "capacity": cap}, keep=False))
    return rows, memory, skipped


def report_per(args, per_rows, rows, memory, skipped, metrics: Metrics) -> dict:
    """The prioritized table (beside dqnfast's uniform sampling), NAME = value lines, memory at 1M."""
    uniform = [dict(r, op="sample (uniform)") for r in rows if r["impl"] == "dqnfast"]
    table = sorted(per_rows + uniform, key=lambda r: (r["batch_size"], r["op"], r["impl"], r["threads"]))
    if table:
        print()
        print_table(
            table,
            [
                ("batch_size", "B"),
                ("op", "op"),
                ("impl", "impl"),
                ("threads", "threads"),
                ("capacity", "capacity"),
                ("samples_per_s", "samples/s"),
                ("ms_per_batch", "ms/batch"),
                ("foreign_cores", "other CPU"),
            ],
            title=f"Prioritized replay (alpha {PER_ALPHA}, beta {PER_BETA}): sample = obs + next_obs uint8[B,4,84,84] "
            "+ IS weights; update = new priorities for the same B indices",
        )
    names = {"dqnfast-per": "per", "numpy-per": "numpy_per", "torchrl-per": "torchrl_per", "cpprb-per": "cpprb_per"}
    for r in per_rows:
        base = r["impl"].removesuffix("-update")
        key = f"replay.{names[base]}_{r['op']}_B{r['batch_size']}" + (
            f"_threads{r['threads']}" if base in ("dqnfast-per", "torchrl-per") else ""
        )
        metrics.emit(key, round(r["samples_per_s"]), "samples/s")
    out: dict = {"skipped": skipped, "ratios": {}}
    for b in args.batch_sizes:
        dq = _best(per_rows, ("dqnfast-per",), b)
        if dq is None:
            continue
        for other, label in (
            (_best(rows, ("dqnfast",), b), "uniform"),
            (_best(per_rows, ("numpy-per",), b), "numpy"),
            (_best(per_rows, ("torchrl-per",), b), "torchrl"),
            (_best(per_rows, ("cpprb-per",), b), "cpprb"),
        ):
            if other:
                ratio = dq["samples_per_s"] / other["samples_per_s"]
                out["ratios"][f"sample_vs_{label}_B{b}"] = ratio
                metrics.emit(f"replay.per_sample_vs_{label}_B{b}", round(ratio, 2), "x", "best thread count of each")
        up = _best(per_rows, ("dqnfast-per-update",), b)
        for other, label in (
            (_best(per_rows, ("numpy-per-update",), b), "numpy"),
            (_best(per_rows, ("torchrl-per-update",), b), "torchrl"),
            (_best(per_rows, ("cpprb-per-update",), b), "cpprb"),
        ):
            if up and other:
                ratio = up["samples_per_s"] / other["samples_per_s"]
                out["ratios"][f"update_vs_{label}_B{b}"] = ratio
                metrics.emit(f"replay.per_update_vs_{label}_B{b}", round(ratio, 2), "x")
    mem_rows = []
    seen = set()
    for name, m in memory.items():
        impl = name.split()[0]
        if impl in seen:
            continue
        seen.add(impl)
        gb_1m = m["nominal_bytes_per_transition"] * 1e6 / GB
        metrics.emit(f"replay.memory_{names[impl]}_1M", round(gb_1m, 2), "GB", "computed from its array sizes")
        mem_rows.append(
            {
                "impl": impl,
                "capacity": m["capacity"],
                "nominal_bpt": m["nominal_bytes_per_transition"],
                "rss_bpt": m["rss_bytes_per_transition"],
                "gb_1m": gb_1m,
            }
        )
    if mem_rows:
        print()
        print_table(
            mem_rows,
            [
                ("impl", "impl"),
                ("capacity", "measured at"),
                ("nominal_bpt", "nominal B/transition"),
                ("rss_bpt", "RSS B/transition"),
                ("gb_1m", "1M transitions GB"),
            ],
            title="Prioritized replay memory (1M Atari transitions, computed from array sizes)",
        )
    out["memory_table"] = mem_rows
    return out


# --------------------------------------------------------------------------- report
def _get(rows, impl, b, t=None):
    for r in rows:
        if r["impl"] == impl and r["batch_size"] == b and (t is None or r["threads"] == t):
            return r
    return None


def _best(rows, impls, b):
    cands = [r for r in rows if r["impl"] in impls and r["batch_size"] == b]
    return max(cands, key=lambda r: r["samples_per_s"]) if cands else None


def report(args, rows, memory, metrics: Metrics, notes, cores) -> dict:
    """Adds ratio columns, prints the tables and the NAME = value unit lines."""
    sb3_impls = ("sb3", "sb3-optmem")
    for r in rows:
        b = r["batch_size"]
        mc = _get(rows, "memcpy-numpy", b)
        sb = _best([x for x in rows if x["threads"] == r["threads"]], sb3_impls, b)
        r["vs_memcpy"] = r["samples_per_s"] / mc["samples_per_s"] if mc else None
        r["vs_sb3"] = r["samples_per_s"] / sb["samples_per_s"] if sb else None
    order = {
        "dqnfast": 0,
        "dqnfast-separate": 0.5,
        "reference": 1,
        "sb3-optmem": 2,
        "sb3": 3,
        "sb3-optmem-dm": 4,
        "memcpy-numpy": 5,
        "memcpy-torch": 6,
    }
    rows.sort(key=lambda r: (r["batch_size"], order.get(r["impl"], 9), r["threads"]))
    for r in rows:
        r["spread"] = f"{r['samples_per_s_min'] / 1e3:,.0f}-{r['samples_per_s_max'] / 1e3:,.0f}k"
    print()
    print_table(
        rows,
        [
            ("batch_size", "B"),
            ("impl", "impl"),
            ("threads", "threads"),
            ("capacity", "capacity"),
            ("samples_per_s", "samples/s"),
            ("spread", "min-max"),
            ("ms_per_batch", "ms/batch"),
            ("obs_gb_per_s", "GB/s"),
            ("vs_sb3", "x SB3"),
            ("vs_memcpy", "x memcpy"),
            ("bytes_per_transition", "B/transition"),
            ("page_faults_per_call", "faults/call"),
            ("foreign_cores", "other CPU"),
            ("reps_discarded", "reps dropped"),
        ],
        title="Replay sampling (obs+next_obs uint8[B,4,84,84]; x SB3 = vs the faster SB3 variant at "
        "the same threads; x memcpy = vs numpy memcpy, 1 thread)",
    )
    print()

    # ------------------------------------------------------------ metric lines
    for r in rows:
        b, t = r["batch_size"], r["threads"]
        key = {
            "dqnfast": f"replay.sample_B{b}_threads{t}",
            "dqnfast-separate": f"replay.sample_separate_B{b}_threads{t}",
            "reference": f"replay.reference_sample_B{b}",
            "sb3": f"replay.sb3_sample_B{b}_threads{t}",
            "sb3-optmem": f"replay.sb3_optmem_sample_B{b}_threads{t}",
            "sb3-optmem-dm": f"replay.sb3_optmem_default_malloc_sample_B{b}_threads{t}",
            "memcpy-numpy": f"replay.memcpy_B{b}",
            "memcpy-torch": f"replay.memcpy_torch_B{b}_threads{t}",
        }[r["impl"]]
        metrics.emit(key, round(r["samples_per_s"]), "samples/s")
        if r["impl"] == "memcpy-numpy":
            metrics.emit(f"replay.memcpy_B{b}_bandwidth", round(r["obs_gb_per_s"], 2), "GB/s")

    summary: dict = {"targets": {}}
    b = HEADLINE_B
    dq = _best(rows, ("dqnfast",), b)
    sb = _best(rows, sb3_impls, b)
    mc = _get(rows, "memcpy-numpy", b)
    mct = _best(rows, ("memcpy-torch",), b)
    ref = _get(rows, "reference", b)
    if dq and sb:
        ratio = dq["samples_per_s"] / sb["samples_per_s"]
        metrics.emit(
            f"replay.ratio_vs_sb3_B{b}",
            round(ratio, 2),
            "x",
            f"dqnfast threads={dq['threads']} vs {sb['impl']} threads={sb['threads']} (best of each)",
        )
        summary["targets"]["ratio_vs_sb3 >= 3"] = {"value": ratio, "pass": ratio >= 3}
        for t in args.threads:
            d1 = _get(rows, "dqnfast", b, t)
            s1 = _best([x for x in rows if x["threads"] == t], sb3_impls, b)
            if d1 and s1:
                metrics.emit(
                    f"replay.ratio_vs_sb3_B{b}_threads{t}", round(d1["samples_per_s"] / s1["samples_per_s"], 2), "x"
                )
        s_opt = _best(rows, ("sb3-optmem",), b)
        if s_opt:
            metrics.emit(
                f"replay.ratio_vs_sb3_optmem_B{b}",
                round(dq["samples_per_s"] / s_opt["samples_per_s"], 2),
                "x",
                "vs CleanRL's configuration (optimize_memory_usage=True)",
            )
    s_dm = _best(rows, ("sb3-optmem-dm",), b)
    if dq and s_dm:
        metrics.emit(
            f"replay.ratio_vs_sb3_default_malloc_B{b}",
            round(dq["samples_per_s"] / s_dm["samples_per_s"], 2),
            "x",
            "vs CleanRL's configuration with glibc's default malloc (page faults vary run to run)",
        )
    if dq and mc:
        ratio = dq["samples_per_s"] / mc["samples_per_s"]
        metrics.emit(
            f"replay.ratio_vs_memcpy_B{b}",
            round(ratio, 3),
            "x",
            f"dqnfast threads={dq['threads']} vs numpy memcpy, 1 thread",
        )
        summary["targets"]["ratio_vs_memcpy >= 0.5"] = {"value": ratio, "pass": ratio >= 0.5}
        d1 = _get(rows, "dqnfast", b, 1)
        if d1:
            metrics.emit(
                f"replay.ratio_vs_memcpy_B{b}_threads1", round(d1["samples_per_s"] / mc["samples_per_s"], 3), "x"
            )
        if mct:
            best_copy = max(
                mc["samples_per_s"],
                _get(rows, "memcpy-torch", b, 1)["samples_per_s"] if _get(rows, "memcpy-torch", b, 1) else 0,
            )
            metrics.emit(
                f"replay.ratio_vs_best_memcpy_1thread_B{b}",
                round(dq["samples_per_s"] / best_copy, 3),
                "x",
                "vs the faster of numpy and torch single-thread copies",
            )
    if dq and ref:
        metrics.emit(f"replay.ratio_vs_reference_B{b}", round(dq["samples_per_s"] / ref["samples_per_s"], 2), "x")

    # ------------------------------------------------------------------ memory
    mem_rows = []
    m_dq = next((memory[k] for k in memory if k.startswith("dqnfast")), None)
    if m_dq:
        cap = m_dq["capacity"]
        rss_1m = m_dq["rss_bytes_per_transition"] * 1_000_000
        scaled = cap != 1_000_000
        metrics.emit(
            "replay.rss_dqnfast_1M",
            round(rss_1m / GB, 3),
            "GB",
            f"scaled from a measured {cap:,}-transition ring" if scaled else "measured, 1M-transition ring",
        )
        metrics.emit(
            "replay.bytes_per_transition_dqnfast",
            round(m_dq["rss_bytes_per_transition"], 1),
            "bytes",
            "resident (VmRSS delta) after a complete fill",
        )
        summary["targets"][f"rss_1M <= {RSS_TARGET_GB} GB"] = {
            "value": rss_1m / GB,
            "pass": rss_1m / GB <= RSS_TARGET_GB,
            "scaled_from": cap if scaled else None,
        }
        mem_rows.append(
            {
                "impl": "dqnfast",
                "capacity": cap,
                "rss_gb": m_dq["rss_ring_bytes"] / GB,
                "rss_bpt": m_dq["rss_bytes_per_transition"],
                "nominal_bpt": m_dq["nominal_bytes_per_transition"],
                "gb_1m": rss_1m / GB,
                "how": "measured" if not scaled else "RSS/transition x 1M",
            }
        )
    m_ref = memory.get("reference")
    if m_ref:
        mem_rows.append(
            {
                "impl": "reference",
                "capacity": m_ref["capacity"],
                "rss_gb": m_ref["rss_ring_bytes"] / GB,
                "rss_bpt": m_ref["rss_bytes_per_transition"],
                "nominal_bpt": None,
                "gb_1m": m_ref["rss_bytes_per_transition"] * 1e6 / GB,
                "how": "measured" if m_ref["capacity"] == 1_000_000 else "RSS/transition x 1M",
            }
        )
    for name in ("sb3-optmem", "sb3"):
        m = memory.get(name)
        if not m:
            continue
        key = name.replace("-", "_")
        gb_1m = m["nominal_bytes_per_transition"] * 1e6 / GB
        metrics.emit(f"replay.memory_{key}_1M", round(gb_1m, 2), "GB", "computed from its array sizes")
        metrics.emit(f"replay.bytes_per_transition_{key}", round(m["nominal_bytes_per_transition"], 1), "bytes")
        metrics.emit(
            f"replay.rss_bytes_per_transition_{key}",
            round(m["rss_bytes_per_transition"], 1),
            "bytes",
            f"measured at {m['capacity']:,} transitions",
        )
        mem_rows.append(
            {
                "impl": name,
                "capacity": m["capacity"],
                "rss_gb": m["rss_ring_bytes"] / GB,
                "rss_bpt": m["rss_bytes_per_transition"],
                "nominal_bpt": m["nominal_bytes_per_transition"],
                "gb_1m": gb_1m,
                "how": "array sizes (measured RSS/transition agrees)",
            }
        )
        if m_dq:
            metrics.emit(f"replay.memory_ratio_{key}_vs_dqnfast", round(gb_1m * GB / rss_1m, 2), "x")
    if mem_rows:
        print()
        print_table(
            mem_rows,
            [
                ("impl", "impl"),
                ("capacity", "measured at"),
                ("rss_gb", "RSS GB"),
                ("rss_bpt", "RSS B/transition"),
                ("nominal_bpt", "nominal B/transition"),
                ("gb_1m", "1M transitions GB"),
                ("how", "1M figure from"),
            ],
            title="Replay memory (RSS = VmRSS growth of a fresh process, buffer filled completely)",
        )
    fills = {k: round(v["adds_per_s"]) for k, v in memory.items()}
    print("fill rate (add calls/s; dqnfast/reference add num_envs steps per call):", fills)

    busy = [r["foreign_cores"] for r in rows if r.get("foreign_cores") is not None]
    summary["max_foreign_cores"] = max(busy) if busy else None
    dirty = [f"{r['impl']} B={r['batch_size']} threads={r['threads']}" for r in rows if not r.get("clean", True)]
    summary["unclean_rows"] = dirty
    if dirty:
        notes.append(
            f"{len(dirty)} of {len(rows)} rows were timed while other processes kept > 0.1 core busy "
            f"(column 'other CPU'; first: {', '.join(dirty[:4])}): not clean figures; "
            "rerun on a quiet machine"
        )
    dropped = sum(r.get("reps_discarded", 0) for r in rows)
    if dropped:
        notes.append(f"{dropped} timing repetitions were repeated because other processes used the CPU meanwhile")
    print()
    for k, v in summary["targets"].items():
        print(f"target {k}: {v['value']:.3g} -> {'PASS' if v['pass'] else 'FAIL'}")
    for n in notes:
        print("note:", n)
    summary["memory_table"] = mem_rows
    return summary


if __name__ == "__main__":
    sys.exit(main())
