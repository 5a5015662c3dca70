"""The ring object: checks with friendly messages, the memory budget, add/sample/gather, save/load.

The index math is in C++ (``dqnfast._core``); where the frames live is the storage role
(``dqnfast.replay.storage``); the file format is ``dqnfast.replay.files``.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dqnfast import _core
from dqnfast.atomic import atomic_open
from dqnfast.memory import MemoryBudgetError, available_memory, plannable_bytes
from dqnfast.replay.batch import Batch
from dqnfast.replay.files import (
    ARRAY_NAMES,
    FORMAT_VERSION,
    PRIORITY_NAME,
    READ_VERSIONS,
    ReplayFileError,
    check_contents,
    digest,
    feed,
)
from dqnfast.replay.prefetch import Prefetcher
from dqnfast.replay.storage import Layout, make_storage

__all__ = ["ReplayRing", "ReplayMemoryError", "batch_nbytes", "ring_nbytes"]

_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


class ReplayMemoryError(MemoryBudgetError):
    """The requested ring does not fit in the memory available."""


def ring_nbytes(capacity: int, frame_bytes: int, *, frames_on_host: bool = True, prioritized: bool = False) -> int:
    """Host bytes of a ring of ``capacity`` slots of ``frame_bytes``-byte frames (frames elsewhere: its
    indices only; prioritized: with the sum tree's share)."""
    per_slot = _core.bytes_per_slot(frame_bytes, prioritized) - (0 if frames_on_host else frame_bytes)
    return int(capacity) * per_slot


def batch_nbytes(batch_size: int, stack: int, frame_bytes: int, *, shared: bool) -> int:
    """Host bytes of one sample buffer (``make_batch``): frames (or their slots) and per-row metadata."""
    width = stack + 1 if shared else 2 * stack
    return int(batch_size) * (width * (frame_bytes + 8) + 24)


def _int_in(name: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in [lo, hi), else a one-line ValueError (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value < hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}), got {value!r}")
    return int(value)


def _positive_int(name: str, value, hi: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value >= hi:
        raise ValueError(f"{name} must be below {hi}, got {value!r}")
    return int(value)


_U64 = 2**64  # seeds and RNG states are uint64
_INT32 = 2**31


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def _float_in(name: str, value, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi], else a one-line ValueError."""
    if not _is_number(value) or not lo <= float(value) <= hi:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def _int_vector(name: str, values) -> np.ndarray:
    """``values`` as a 1-D int64 array; floats, bools, 2-D arrays and values beyond int64 are refused."""
    a = np.asarray(values)
    if a.ndim > 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and int(a.max()) >= 2**63:
        raise ValueError(f"{name} holds {int(a.max())}, beyond int64")
    return np.ascontiguousarray(a, dtype=np.int64).reshape(-1)


def _vector(name: str, values, dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, which the core refuses
        a = np.asarray(values, dtype=dtype)
    if a.ndim > 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a.reshape(-1)


class ReplayRing:
    """Replay memory for batched envs that stores each frame once.

    Args:
        capacity: total slots (env steps) over all envs; each env gets
            ``capacity // num_envs`` slots.
        num_envs: number of env streams (envpool's ``num_envs``).
        frame_shape: shape of ONE frame: ``(84, 84)`` for Atari pixels,
            ``(128,)`` for Atari RAM, ``(4,)`` for CartPole.
        frame_dtype: numpy dtype of a frame (uint8 for Atari, float32 for vectors).
        stack: frames per observation (4 for Atari pixels, 1 otherwise).
        n_step: return horizon n >= 1.
        gamma: discount in [0, 1].
        seed: seed of the sampler's RNG.
        num_threads: C++ threads for gathering (default: all cores).
        num_actions: when given, ``add`` refuses actions outside [0, num_actions) and
            ``load`` refuses files that hold one (without it: [0, 2^31), int32 storage).
        check_memory: refuse, before allocating, a ring that would not fit in RAM
            (or, with ``frames_device``, in that device's free memory).
        frames_device: None (default): the frames live in the C++ ring's host
            memory and ``sample`` copies them into CPU tensors. A torch device
            (``"cuda"``): the frames live in one tensor on that device, written
            by ``add``; the C++ ring keeps everything else (validity, sampling,
            n-step returns) and hands out the slot of each frame, which the
            device gathers with one ``index_select``. Batches are then device
            tensors and no frame crosses PCIe at sample time. ``"cpu"`` runs
            the same path on host tensors (tests, machines without a GPU).
            Host and device frames are storage roles (``dqnfast.replay.storage``).
        prioritized: proportional prioritized replay (Schaul et al. 2016) instead of
            uniform sampling: slot i is drawn with probability p_i^alpha / sum_k p_k^alpha
            over the valid slots, p_i = |TD error| + priority_eps as last reported by
            ``update_priorities``; a new transition starts at the largest p reported so
            far (1 before any). Batches then carry importance-sampling weights.
        alpha: priority exponent in [0, 1] (0: uniform over the valid slots).
        priority_eps: added to every reported |TD error| (> 0): no valid slot starves.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: Sequence[int],
        frame_dtype=np.uint8,
        stack: int = 4,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
        num_threads: int | None = None,
        check_memory: bool = True,
        frames_device: str | torch.device | None = None,
        num_actions: int | None = None,
        prioritized: bool = False,
        alpha: float = 0.6,
        priority_eps: float = 1e-6,
    ) -> None:
        capacity = _positive_int("capacity", capacity)
        self.num_envs = _positive_int("num_envs", num_envs, _INT32)
        if capacity % self.num_envs:
            lower = capacity // self.num_envs * self.num_envs
            raise ValueError(
                f"capacity {capacity} is not a multiple of num_envs {self.num_envs} (each env gets an "
                f"equal segment); use {lower or self.num_envs} or {lower + self.num_envs}"
            )
        self.stack = _positive_int("stack", stack, _INT32)
        self.n_step = _positive_int("n_step", n_step, _INT32)
        self.num_actions = None if num_actions is None else _int_in("num_actions", num_actions, 1, _INT32 + 1)
        if (
            isinstance(gamma, bool)
            or not isinstance(gamma, (int, float, np.integer, np.floating))
            or not (0.0 <= float(gamma) <= 1.0)
        ):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        try:
            self.frame_shape = tuple(_positive_int("frame_shape", d) for d in frame_shape)
        except (TypeError, ValueError):
            self.frame_shape = ()
        if not self.frame_shape:
            raise ValueError(f"frame_shape must be non-empty positive dims, got {frame_shape!r}")
        try:
            self.frame_dtype = np.dtype(frame_dtype)
        except TypeError:
            raise ValueError(f"frame_dtype {frame_dtype!r} is not a numpy dtype") from None
        if self.frame_dtype not in _TORCH_DTYPES:
            raise ValueError(
                f"frame_dtype {self.frame_dtype} not supported; use one of {sorted(map(str, _TORCH_DTYPES))}"
            )
        self.obs_shape = (self.stack, *self.frame_shape) if self.stack > 1 else self.frame_shape
        self.frame_bytes = math.prod(self.frame_shape) * self.frame_dtype.itemsize
        self.seed = _int_in("seed", seed, 0, _U64)
        self.prioritized = bool(prioritized)
        self.alpha = _float_in("alpha", alpha, 0.0, 1.0)
        self.priority_eps = float(priority_eps) if _is_number(priority_eps) else math.nan
        if not (math.isfinite(self.priority_eps) and self.priority_eps > 0.0):
            raise ValueError(f"priority_eps must be positive and finite, got {priority_eps!r}")
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        num_threads = _positive_int("num_threads", num_threads, _INT32)

        self._storage = make_storage(frames_device)
        self.frames_device: torch.device | None = self._storage.device
        per_slot = ring_nbytes(1, self.frame_bytes, frames_on_host=self._storage.in_core, prioritized=self.prioritized)
        self.nbytes = capacity * per_slot  # host memory
        self.device_nbytes = 0 if self._storage.in_core else capacity * self.frame_bytes
        if check_memory:
            self._check_memory(capacity, per_slot)
        self._build_core(capacity, num_threads)

    def _check_memory(self, capacity: int, per_slot: int) -> None:
        """Refuses, before allocating, a ring that does not fit in RAM (or on its frames' device)."""
        avail = available_memory()
        budget = plannable_bytes(avail.nbytes)
        if self.nbytes > budget:
            raise ReplayMemoryError(
                f"replay capacity {capacity} needs {self.nbytes / 1e9:.2f} GB of RAM but {avail.source} "
                f"leaves {avail.nbytes / 1e9:.2f} GB available, of which 90% minus 0.5 GB ({budget / 1e9:.2f} GB) "
                f"may be planned; lower the capacity to at most {budget // per_slot}"
            )
        problem = self._storage.device_memory_problem(capacity, self.frame_bytes)
        if problem:
            raise ReplayMemoryError(problem)

    def _build_core(self, capacity: int, num_threads: int) -> None:
        """The C++ ring, and the storage role attached to it."""
        self._ring = _core._ReplayRing(
            capacity,
            self.num_envs,
            self.frame_bytes,
            self.stack,
            self.n_step,
            self.gamma,
            self.seed,
            num_threads,
            store_frames=self._storage.in_core,
            num_actions=self.num_actions or 0,
            prioritized=self.prioritized,
            alpha=self.alpha,
            priority_eps=self.priority_eps,
        )
        self.capacity = self._ring.capacity
        self.segment_capacity = self._ring.segment_capacity
        self.layout = Layout(
            self.num_envs,
            self.segment_capacity,
            self.frame_shape,
            self.frame_dtype,
            _TORCH_DTYPES[self.frame_dtype],
            self.frame_bytes,
            self.stack,
            weighted=self.prioritized,
        )
        self._storage.attach(self._ring, self.layout)

    # ----------------------------------------------------------------- writing
    def add(self, env_ids, frames, actions, rewards, terminated, truncated, first) -> np.ndarray:
        """Appends one step for each env in ``env_ids`` (any subset, any order).

        env_ids: int[K]; frames: frame_dtype[K, *frame_shape] (axis 0 may be
        strided, e.g. ``obs[:, -1]``); actions: int[K]; rewards: float[K];
        terminated, truncated, first: bool[K]. Returns int64[K]: the slot (global
        index) each env's step was written to, as the core computed it.
        """
        ids = _int_vector("env_ids", env_ids)
        if ids.size == 0:
            return np.zeros(0, np.int64)
        frames = np.asarray(frames)
        if frames.dtype != self.frame_dtype:
            raise ValueError(f"frames have dtype {frames.dtype}, this ring stores {self.frame_dtype}")
        if frames.shape[1:] != self.frame_shape or frames.ndim != len(self.frame_shape) + 1:
            raise ValueError(
                f"frames have shape {frames.shape}, expected (K, {', '.join(map(str, self.frame_shape))}) "
                "(one newest frame per env: obs[:, -1] for stacked Atari pixels)"
            )
        if not all(s >= 0 for s in frames.strides[1:]) or not _inner_contiguous(frames):
            frames = np.ascontiguousarray(frames)
        # shapes and dtypes here; ranges (ids, actions, finite rewards) in the core, before it writes anything
        rewards = np.asarray(rewards)
        if rewards.dtype.kind not in "iuf":
            raise ValueError(f"rewards must be numbers, got dtype {rewards.dtype}")
        slots = self._ring._add(
            ids,
            frames,
            _int_vector("actions", actions),
            _vector("rewards", rewards, np.float32),
            _vector("terminated", terminated, bool),
            _vector("truncated", truncated, bool),
            _vector("first", first, bool),
        )
        # the core checked the call and wrote the step; frames kept outside it go to the same slots
        self._storage.write(slots, frames)
        return slots

    # ---------------------------------------------------------------- sampling
    @property
    def can_share(self) -> bool:
        """Whether batches can use shared obs/next_obs rows: stacked frames and n_step == 1."""
        return self.stack > 1 and self.n_step == 1

    def make_batch(self, batch_size: int, pin_memory: bool = False, shared: bool | None = None) -> Batch:
        """Allocates reusable output tensors for ``sample``/``gather``.

        shared: obs and next_obs as two views of one [B, stack + 1, ...] window
        (``Batch.frames``), which gathers 5 frames per Atari transition instead of 8.
        None (default): shared where possible (``can_share``: stack > 1, n_step == 1).
        """
        if shared is None:
            shared = self.can_share
        elif shared and not self.can_share:
            raise ValueError(
                f"shared obs/next_obs rows need stack > 1 and n_step == 1 (this ring: stack "
                f"{self.stack}, n_step {self.n_step}); use make_batch(..., shared=False)"
            )
        return self._alloc(_positive_int("batch_size", batch_size), pin_memory, bool(shared))

    def _alloc(self, b: int, pin_memory: bool = False, shared: bool = False) -> Batch:
        self._check_batch_memory(b, shared)
        return self._storage.alloc(b, shared, pin_memory)

    def _check_batch_memory(self, b: int, shared: bool) -> None:
        """Refuses, in one line, a batch whose buffers cannot be allocated (instead of torch's error)."""
        nbytes = batch_nbytes(b, self.stack, self.frame_bytes, shared=shared)
        if nbytes < 2**28:  # small batches skip the look at /proc
            return
        avail = available_memory()
        if nbytes > plannable_bytes(avail.nbytes):
            raise ValueError(
                f"batch_size {b} needs {nbytes / 1e9:.2f} GB of buffers but {avail.source} leaves "
                f"{avail.nbytes / 1e9:.2f} GB available (90% minus 0.5 GB may be planned); sample smaller batches"
            )

    def prefetcher(
        self,
        batch_size: int,
        device: torch.device | str,
        *,
        pin_memory: bool = False,
        beta0: float = 1.0,
        beta_steps: int = 1,
    ) -> Prefetcher:
        """Batches of ``batch_size`` on ``device``, double-buffered, with the priority feedback of a
        prioritized ring and beta annealed from ``beta0`` to 1 over ``beta_steps`` agent steps
        (see ``dqnfast.replay.prefetch``)."""
        return Prefetcher(
            self,
            _positive_int("batch_size", batch_size),
            device,
            pin_memory=pin_memory,
            beta0=_float_in("beta0", beta0, 0.0, 1.0),
            beta_steps=_positive_int("beta_steps", beta_steps),
        )

    def _out(self, batch_size: int, out: Batch | None) -> Batch:
        if out is None:
            return self.make_batch(batch_size)
        if len(out) != batch_size:
            raise ValueError(f"out holds {len(out)} rows but batch_size is {batch_size}")
        return out

    def sample(self, batch_size: int, out: Batch | None = None, beta: float = 1.0) -> Batch:
        """Draws ``batch_size`` valid transitions (with replacement): uniformly, or by priority.

        Writes into ``out`` (from ``make_batch``) when given, else allocates. A prioritized
        ring draws stratified (row b from the b-th of B equal slices of the priority mass) and
        sets ``weight`` = (N P(i))^-beta / max over the batch: N the number of valid slots,
        P(i) the probability of one draw. The batch's largest weight, not the ring's, is the
        normaliser (as in Dopamine's Rainbow): no minimum over the ring to keep current, and
        one rarely drawn transition cannot shrink every update (csrc/replay_ring.h, Weights).
        """
        out = self._out(_positive_int("batch_size", batch_size), out)
        beta = _float_in("beta", beta, 0.0, 1.0)
        try:
            return self._storage.fill(out, None, beta)
        except RuntimeError as e:  # no valid transition yet
            raise ValueError(str(e)) from None

    def gather(self, indices, out: Batch | None = None, beta: float = 1.0) -> Batch:
        """Gathers the transitions at explicit ``indices`` (all must be valid); weights as ``sample``'s."""
        idx = _int_vector("indices", indices)
        if len(idx) == 0:
            return self._alloc(0)
        return self._storage.fill(self._out(len(idx), out), idx, _float_in("beta", beta, 0.0, 1.0))

    # ---------------------------------------------------------- priorities
    def update_priorities(self, indices, priorities, generations) -> int:
        """Reports |TD error| per drawn index; returns how many reports were applied.

        indices, generations: int[B], a batch's ``index`` and ``generation`` as drawn;
        priorities: float[B] >= 0 (|TD errors|; the slot's priority becomes it + priority_eps).
        A report whose slot has been overwritten since the draw (its generation, the step it
        holds, changed) is dropped: it belongs to a transition that is gone. A negative or
        non-finite priority, an index out of range or mismatched lengths are one-line
        ValueErrors and change nothing.
        """
        if not self.prioritized:
            raise ValueError("this ring samples uniformly; make it with prioritized=True to update priorities")
        idx = _int_vector("indices", indices)
        gen = _int_vector("generations", generations)
        p = _vector("priorities", priorities, np.float32)
        if not (len(idx) == len(gen) == len(p)):
            raise ValueError(
                f"one priority per index and one generation per index: got {len(idx)} indices, "
                f"{len(p)} priorities, {len(gen)} generations"
            )
        return self._ring._update_priorities(idx, gen, p)

    def priorities(self, indices) -> np.ndarray:
        """float64[B]: each slot's priority p_i (0 if never written; 1 in a uniform ring)."""
        return self._ring._priorities(_int_vector("indices", indices))

    def probabilities(self, indices) -> np.ndarray:
        """float64[B]: the probability that one draw returns each index now (0 if not valid)."""
        return self._ring._probabilities(_int_vector("indices", indices))

    @property
    def max_priority(self) -> float:
        """The largest priority reported so far (1 before any): where a new transition starts."""
        return self._ring.max_priority

    # ------------------------------------------------------------- inspection
    def __len__(self) -> int:
        """Stored steps over all envs."""
        return self._ring.size()

    def num_valid(self) -> int:
        """Number of indices that are valid transitions now."""
        return self._ring.num_valid()

    def valid_indices(self) -> np.ndarray:
        """int64[N], sorted: every index ``sample`` can draw now."""
        return self._ring.valid_indices()

    def locate(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Maps indices to (env id, step): step t = the t-th add of that env."""
        return self._ring.locate(_int_vector("indices", indices))

    @property
    def rng_state(self) -> int:
        return self._ring.rng_state

    @rng_state.setter
    def rng_state(self, value: int) -> None:
        self._ring.rng_state = _int_in("rng_state", value, 0, _U64)

    def _meta(self) -> dict:
        return {
            "format": "dqnfast-replay",
            "version": FORMAT_VERSION,
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "frame_shape": list(self.frame_shape),
            "frame_dtype": self.frame_dtype.str,
            "stack": self.stack,
            "n_step": self.n_step,
            "gamma": self.gamma,
            "seed": self.seed,
            "rng_state": self.rng_state,
            "num_actions": self.num_actions,
            "sampler": (
                {
                    "kind": "prioritized",
                    "alpha": self.alpha,
                    "priority_eps": self.priority_eps,
                    "max_priority": self.max_priority,
                }
                if self.prioritized
                else {"kind": "uniform"}
            ),
        }

    def _array_names(self) -> tuple[str, ...]:
        return (*ARRAY_NAMES, PRIORITY_NAME) if self.prioritized else ARRAY_NAMES

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the ring's contents to one ``.npz`` file, atomically.

        The file is a plain numpy archive (``np.load`` reads it): ``meta``
        (JSON), ``frames`` [num_envs, slots, frame_bytes] uint8 (the first ``slots`` of each
        env's segment: every slot written, so a ring that is not full yet, such as the
        warm-up's, costs only what it holds), ``actions``,
        ``rewards``, ``flags`` [num_envs, segment], ``cursors`` [num_envs], for a
        prioritized ring ``priorities`` [num_envs, segment] and, written last,
        ``sha256``: the checksum of everything before it (``dqnfast.replay.files``),
        which ``load`` verifies.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = dict(self._ring._storage())
        written = int(
            np.minimum(arrays["cursors"], self.layout.segment).max(initial=0)
        )  # an env writes slot k at add k
        arrays["frames"] = self._storage.saved_frames(written)
        meta = json.dumps(self._meta())
        h = digest(meta)
        names = self._array_names()
        for name in names:
            feed(h, name, arrays[name])
        with atomic_open(path) as f:
            np.savez(f, meta=np.array(meta), **{n: arrays[n] for n in names}, sha256=np.array(h.hexdigest()))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        num_threads: int | None = None,
        check_memory: bool = True,
        frames_device: str | torch.device | None = None,
        num_actions: int | None = None,
        alpha: float | None = None,
        priority_eps: float | None = None,
    ) -> "ReplayRing":
        """Rebuilds a ring saved by ``save`` (contents, cursors and RNG state), frames where ``frames_device`` says.

        A prioritized ring comes back prioritized with its priorities and largest priority;
        ``alpha`` / ``priority_eps`` replace the file's (the raw priorities are kept, so a new
        alpha re-weighs them). Files without a sampler entry (version 2 and older) load as
        uniform rings.

        The file is trusted only after its checksum matches and its contents are consistent: actions in
        [0, num_actions) (the argument, else the file's own), rewards finite, only known flag bits, cursors
        in range and slots never written still empty. Anything else is one line, a ``ReplayFileError``.
        """
        path = Path(path)
        if not path.exists() and path.with_name(path.name + ".npz").exists():
            path = path.with_name(path.name + ".npz")
        if not path.exists():
            raise FileNotFoundError(f"no saved replay at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls._load(z, path, num_threads, check_memory, frames_device, num_actions, alpha, priority_eps)
        except ReplayFileError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OverflowError, OSError, EOFError) as e:
            msg = str(e).replace("\n", " ")
            raise ReplayFileError(
                f"replay file {path} is truncated or corrupt ({type(e).__name__}: {msg}); delete it to start with "
                "an empty ring"
            ) from None

    @classmethod
    def _load(  # noqa: PLR0913 - load's arguments, passed on
        cls, z, path: Path, num_threads, check_memory, frames_device, num_actions, alpha, priority_eps
    ) -> "ReplayRing":
        m = _read_meta(z, path)
        meta, sampler = m.meta, m.sampler
        ring = cls(
            meta["capacity"],
            meta["num_envs"],
            meta["frame_shape"],
            meta["frame_dtype"],
            meta["stack"],
            meta["n_step"],
            meta["gamma"],
            meta["seed"],
            num_threads,
            check_memory,
            frames_device,
            meta.get("num_actions") if num_actions is None else num_actions,
            prioritized=m.prioritized,
            alpha=sampler.get("alpha", 0.6) if alpha is None else alpha,
            priority_eps=sampler.get("priority_eps", 1e-6) if priority_eps is None else priority_eps,
        )
        h = digest(m.text)
        views, frame_slots = ring._restore_arrays(z, path, h)
        if m.digest is not None and h.hexdigest() != m.digest:
            raise _bad_file(path, "checksum mismatch (its contents changed after it was written)")
        problem = check_contents(
            views,
            segment=ring.layout.segment,
            num_actions=ring.num_actions,
            frames=ring._storage.host_frames(),
            max_priority=float(m.max_priority),
            priority_eps=float(sampler.get("priority_eps", 0.0)) if m.prioritized else 0.0,
            frame_slots=frame_slots,
        )
        if problem:
            raise _bad_file(path, problem)
        ring.rng_state = m.rng_state
        if m.prioritized:
            ring._ring.max_priority = float(m.max_priority)
        ring._ring.rebuild_index()
        return ring

    def _restore_arrays(self, z, path: Path, h) -> tuple[dict[str, np.ndarray], int]:
        """Copies the file's arrays into this (new) ring, each checked for shape and dtype and fed to ``h``.

        Returns (the ring's arrays by name, with a zero-stride stand-in of the file's frame layout, and
        the number of frame slots per segment the file holds: all, or the first ones in version 4).
        """
        L = self.layout
        frame_slots = L.segment
        views = dict(self._ring._storage())
        # the file layout of the frames, whichever storage holds them (a zero-stride stand-in for the check)
        views["frames"] = np.lib.stride_tricks.as_strided(
            np.zeros(1, np.uint8), (L.num_envs, L.segment, L.frame_bytes), (0, 0, 0)
        )
        for name in self._array_names():
            view = views[name]
            arr = z[name]
            shape = view.shape
            if name == "frames" and arr.ndim == 3 and arr.shape[1] <= L.segment:
                frame_slots = arr.shape[1]  # the first slots of each segment (version 4)
                shape = (L.num_envs, frame_slots, L.frame_bytes)
            if arr.shape != shape or arr.dtype != view.dtype:
                raise _bad_file(
                    path, f"array {name} has {arr.dtype}{list(arr.shape)}, expected {view.dtype}{list(view.shape)}"
                )
            feed(h, name, arr)
            if name == "frames":
                self._storage.restore_frames(arr)
            else:
                self._ring._restore(name, arr)
            del arr
        return views, frame_slots


def _bad_file(path: Path, what: str) -> ReplayFileError:
    return ReplayFileError(f"replay file {path} is invalid: {what}; delete it to start with an empty ring")


@dataclass
class _FileMeta:
    """A replay file's header, checked: its JSON (``text``, parsed: ``meta``), checksum, RNG state, sampler."""

    text: str
    meta: dict
    digest: str | None  # None: version 1, which predates the checksum
    rng_state: int
    sampler: dict
    prioritized: bool
    max_priority: float


def _read_meta(z, path: Path) -> _FileMeta:
    """The header of replay file ``path`` (open as ``z``); ReplayFileError (one line) for one that is not valid."""
    meta_text = str(z["meta"])
    meta = json.loads(meta_text)
    if not isinstance(meta, dict) or meta.get("format") != "dqnfast-replay" or meta.get("version") not in READ_VERSIONS:
        raise ReplayFileError(f"{path} is not a dqnfast replay file of version {FORMAT_VERSION}")
    # version 1 predates the checksum: its arrays are covered by the zip CRCs and the checks below
    expect_digest = None
    if meta["version"] >= 2:
        if "sha256" not in z.files:
            raise _bad_file(path, "no checksum")
        expect_digest = str(z["sha256"])
    rng_state = meta["rng_state"]
    if isinstance(rng_state, bool) or not isinstance(rng_state, int) or not 0 <= rng_state < _U64:
        raise _bad_file(path, f"rng_state {rng_state!r} is not a uint64")
    sampler = meta.get("sampler") or {"kind": "uniform"}
    prioritized = sampler.get("kind") == "prioritized"
    if sampler.get("kind") not in ("uniform", "prioritized"):
        raise _bad_file(path, f"sampler {sampler.get('kind')!r} is not uniform or prioritized")
    max_priority = sampler.get("max_priority", 1.0)
    if prioritized and not (_is_number(max_priority) and math.isfinite(max_priority) and max_priority > 0):
        raise _bad_file(path, f"max_priority {max_priority!r} is not a positive number")
    return _FileMeta(meta_text, meta, expect_digest, rng_state, sampler, prioritized, max_priority)


def _inner_contiguous(a: np.ndarray) -> bool:
    expect = a.itemsize
    for d in range(a.ndim - 1, 0, -1):
        if a.strides[d] != expect:
            return False
        expect *= a.shape[d]
    return True
