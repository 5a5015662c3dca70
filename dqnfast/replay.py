"""The Python face of the C++ replay ring (``dqnfast._core``).

The ring stores every observation frame once, in one circular segment per env,
and rebuilds frame stacks and n-step returns by index at sample time, in C++
threads with the GIL released. The exact rules (what a slot holds, which
indices are valid, how stacks and returns are rebuilt) are written as
invariants at the top of ``csrc/replay_ring.h``; in short:

* Call ``add`` once per envpool result with the *newest* frame of the returned
  observation (``obs[:, -1]`` for Atari pixels, ``info["ram"]`` for RAM, the
  vector itself for classic control), the action that was sent, the reward,
  ``terminated``, ``truncated`` and ``first = info["elapsed_step"] == 0``.
  The observation from ``reset()`` is added with ``first=True``.
* A transition at step ``t`` is ``(stack(t), action(t+1), n-step return,
  stack(t+m), discount)``. Bootstrapping is cut (``discount = 0``) at every
  ``terminated`` (life losses with ``episodic_life`` included); truncation
  bootstraps through the real final observation (stored in its own slot; the
  reset step after it is a separate slot and never a transition). The stack is
  cut only where a new episode starts (the first frame repeats, as envpool's
  reset stack does), never at a life loss.

This module does the checks with friendly messages, the memory budget, the
torch output buffers (optionally pinned) and save/load; it does no index math.
"""

from __future__ import annotations

import hashlib
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
from dqnfast.memory import available_memory_bytes

__all__ = ["Batch", "ReplayRing", "ReplayMemoryError", "ReplayFileError", "available_memory_bytes"]

_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}


class ReplayMemoryError(MemoryError):
    """The requested ring does not fit in the memory available."""


class ReplayFileError(ValueError):
    """A saved ring file is truncated, corrupt or of another format."""


@dataclass
class Batch:
    """A sampled batch, as CPU torch tensors (pinned when asked for).

    obs, next_obs: frame_dtype[B, *obs_shape] (uint8[B, 4, 84, 84] for Atari);
    action: int64[B]; reward: float32[B] (n-step discounted return);
    discount: float32[B] (gamma^m, 0 after terminated); index: int64[B].

    frames: with shared rows (``make_batch(shared=True)``, the default for stacked
    frames and n_step=1), the window uint8[B, stack + 1, ...] of steps t-3 .. t+1
    that ``obs = frames[:, :-1]`` and ``next_obs = frames[:, 1:]`` are views of: each
    transition's 5 distinct frames are gathered and copied to the GPU once, not 8
    (37.5% less memory traffic). The views are read-only in spirit: writing into
    obs changes next_obs. None with separate rows.
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    index: torch.Tensor
    frames: torch.Tensor | None = None

    @staticmethod
    def shared(
        frames: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, index: torch.Tensor
    ) -> "Batch":
        """A batch whose obs and next_obs are views of one window tensor [B, stack + 1, ...]."""
        return Batch(frames[:, :-1], frames[:, 1:], action, reward, discount, index, frames)

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """Copies every tensor to ``device`` (asynchronously from pinned memory); shared rows stay shared."""
        rest = [t.to(device, non_blocking=non_blocking) for t in (self.action, self.reward, self.discount, self.index)]
        if self.frames is not None:
            return Batch.shared(self.frames.to(device, non_blocking=non_blocking), *rest)
        return Batch(
            self.obs.to(device, non_blocking=non_blocking), self.next_obs.to(device, non_blocking=non_blocking), *rest
        )

    def __len__(self) -> int:
        return self.action.shape[0]

    def _arrays(self) -> tuple[np.ndarray | None, ...]:
        """(obs or frames, next_obs or None, action, reward, discount, index) as numpy views for the core."""
        cached = self.__dict__.get("_np")
        if cached is None:
            ts = (
                self.frames if self.frames is not None else self.obs,
                None if self.frames is not None else self.next_obs,
                self.action,
                self.reward,
                self.discount,
                self.index,
            )
            names = (
                "frames" if self.frames is not None else "obs",
                "next_obs",
                "action",
                "reward",
                "discount",
                "index",
            )
            for name, t in zip(names, ts):
                if t is not None and t.device.type != "cpu":
                    raise ValueError(
                        f"out.{name} must be a CPU tensor (got {t.device}); copy to the GPU after sampling"
                    )
            cached = tuple(None if t is None else t.numpy() for t in ts)
            self.__dict__["_np"] = cached
        return cached


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


def _frames_device(frames_device) -> torch.device | None:
    """None, "cpu" or an available CUDA device; anything else is a one-line ValueError."""
    if frames_device is None:
        return None
    try:
        dev = torch.device(frames_device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"frames_device {frames_device!r} is not a device ({e})".replace("\n", " ")) from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(f"frames_device must be None, 'cpu' or a CUDA device, got {frames_device!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"frames_device={str(frames_device)!r} but CUDA is not available here; "
            "keep the frames in RAM (frames_device=None)"
        )
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"frames_device={str(frames_device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return dev


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
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        num_threads = _positive_int("num_threads", num_threads, _INT32)

        self.frames_device = _frames_device(frames_device)
        on_host = self.frames_device is None
        slots = capacity
        per_slot = _core.bytes_per_slot(self.frame_bytes) - (0 if on_host else self.frame_bytes)
        self.nbytes = slots * per_slot  # host memory
        self.device_nbytes = 0 if on_host else slots * self.frame_bytes
        if check_memory:
            avail = available_memory_bytes()
            if self.nbytes > avail:
                raise ReplayMemoryError(
                    f"replay capacity {capacity} needs {self.nbytes / 1e9:.2f} GB of RAM but only "
                    f"{avail / 1e9:.2f} GB is available; lower the capacity to at most {avail // per_slot}"
                )
            if self.frames_device is not None and self.frames_device.type == "cuda":
                free = torch.cuda.mem_get_info(self.frames_device)[0]
                budget = int(free * 0.8)  # the networks, optimizer and batches need the rest
                if self.device_nbytes > budget:
                    raise ReplayMemoryError(
                        f"replay capacity {capacity} needs {self.device_nbytes / 1e9:.2f} GB on {self.frames_device} "
                        f"but 80% of its free memory is {budget / 1e9:.2f} GB; lower the capacity to at most "
                        f"{budget // self.frame_bytes} or keep the frames in RAM (replay.storage=cpu)"
                    )
        self._ring = _core._ReplayRing(
            capacity,
            self.num_envs,
            self.frame_bytes,
            self.stack,
            self.n_step,
            self.gamma,
            self.seed,
            num_threads,
            store_frames=on_host,
            num_actions=self.num_actions or 0,
        )
        self.capacity = self._ring.capacity
        self.segment_capacity = self._ring.segment_capacity
        self._dev_frames: torch.Tensor | None = None
        self._cursors = self._ring._storage()["cursors"]  # a live view: steps added per env
        if not on_host:
            self._dev_frames = torch.zeros(
                (self.capacity, *self.frame_shape), dtype=_TORCH_DTYPES[self.frame_dtype], device=self.frames_device
            )

    # ----------------------------------------------------------------- writing
    def add(self, env_ids, frames, actions, rewards, terminated, truncated, first) -> None:
        """Appends one step for each env in ``env_ids`` (any subset, any order).

        env_ids: int[K]; frames: frame_dtype[K, *frame_shape] (axis 0 may be
        strided, e.g. ``obs[:, -1]``); actions: int[K]; rewards: float[K];
        terminated, truncated, first: bool[K].
        """
        ids = _int_vector("env_ids", env_ids)
        if ids.size == 0:
            return
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
        self._ring._add(
            ids,
            frames,
            _int_vector("actions", actions),
            _vector("rewards", rewards, np.float32),
            _vector("terminated", terminated, bool),
            _vector("truncated", truncated, bool),
            _vector("first", first, bool),
        )
        if self._dev_frames is not None:  # the core checked the call; the frames go to their slots on the device
            slots = ids * self.segment_capacity + (self._cursors[ids] - 1) % self.segment_capacity
            dev = self.frames_device
            # non_blocking from pageable memory: CUDA stages the bytes before returning, and the
            # copy does not wait for the updates queued on the stream
            self._dev_frames[torch.from_numpy(slots).to(dev, non_blocking=True)] = torch.from_numpy(
                np.ascontiguousarray(frames)
            ).to(dev, non_blocking=True)

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
        tdt = _TORCH_DTYPES[self.frame_dtype]
        if self._dev_frames is not None:
            return self._alloc_device(b, shared)
        kw = {"pin_memory": pin_memory}
        meta = _meta_tensors(b, **kw)
        if shared:
            return Batch.shared(torch.empty((b, self.stack + 1, *self.frame_shape), dtype=tdt, **kw), *meta)
        return Batch(
            torch.empty((b, *self.obs_shape), dtype=tdt, **kw),
            torch.empty((b, *self.obs_shape), dtype=tdt, **kw),
            *meta,
        )

    def _check_batch_memory(self, b: int, shared: bool) -> None:
        """Refuses, in one line, a batch whose buffers cannot be allocated (instead of torch's error)."""
        width = self.stack + 1 if shared else 2 * self.stack
        nbytes = b * (width * (self.frame_bytes + 8) + 24)  # frames (or their slots) + per-row metadata
        if nbytes < 2**28:  # small batches skip the look at /proc
            return
        avail = available_memory_bytes()
        if nbytes > avail:
            raise ValueError(
                f"batch_size {b} needs {nbytes / 1e9:.2f} GB of buffers but only {avail / 1e9:.2f} GB "
                "is available; sample smaller batches"
            )

    def _alloc_device(self, b: int, shared: bool) -> Batch:
        """A batch on the frames' device, with host staging for the core's output (pinned on CUDA)."""
        dev = self.frames_device
        pin = dev.type == "cuda"
        width = self.stack + 1 if shared else 2 * self.stack
        host = {
            "slots": torch.empty((b, width), dtype=torch.int64, pin_memory=pin),
            **dict(zip(_META_NAMES, _meta_tensors(b, pin_memory=pin))),
        }
        frames = torch.empty((b, width, *self.frame_shape), dtype=self._dev_frames.dtype, device=dev)
        meta = _meta_tensors(b, device=dev)
        if shared:
            batch = Batch.shared(frames, *meta)
        elif self.stack > 1:
            batch = Batch(frames[:, : self.stack], frames[:, self.stack :], *meta)
        else:
            batch = Batch(frames[:, 0], frames[:, 1], *meta)
        batch.__dict__["_device"] = {
            "host": host,
            "np": {k: v.numpy() for k, v in host.items()},
            "frames": frames,
            "shared": shared,
            "event": None,
        }
        return batch

    def _fill_device(self, out: Batch, indices: np.ndarray | None) -> Batch:
        """Core -> slots and metadata on the host -> the device gathers the frames (no host sync)."""
        d = out.__dict__.get("_device")
        if d is None:
            raise ValueError(
                "out was not made by this ring's make_batch (its frames live on "
                f"{self.frames_device}); use ring.make_batch"
            )
        if d["event"] is not None:  # the staging buffers are refilled only after their last copy finished
            d["event"].synchronize()
        h = d["np"]
        args = (h["slots"], d["shared"], h["action"], h["reward"], h["discount"], h["index"])
        if indices is None:
            self._ring._sample_slots(*args)
        else:
            self._ring._gather_slots(indices, *args)
        t = d["host"]
        b, width = h["slots"].shape
        frames = d["frames"]
        slots = t["slots"].to(self.frames_device, non_blocking=True)
        torch.index_select(self._dev_frames, 0, slots.view(-1), out=frames.view(b * width, *self.frame_shape))
        for name in _META_NAMES:
            getattr(out, name).copy_(t[name], non_blocking=True)
        if self.frames_device.type == "cuda":
            d["event"] = torch.cuda.Event()
            d["event"].record(torch.cuda.current_stream(self.frames_device))  # that GPU's stream, not cuda:0's
        return out

    def _out(self, batch_size: int, out: Batch | None) -> Batch:
        if out is None:
            return self.make_batch(batch_size)
        if len(out) != batch_size:
            raise ValueError(f"out holds {len(out)} rows but batch_size is {batch_size}")
        return out

    def sample(self, batch_size: int, out: Batch | None = None) -> Batch:
        """Draws ``batch_size`` valid transitions uniformly (with replacement).

        Writes into ``out`` (from ``make_batch``) when given, else allocates.
        """
        out = self._out(_positive_int("batch_size", batch_size), out)
        try:
            if self._dev_frames is not None:
                return self._fill_device(out, None)
            self._ring._sample(*out._arrays())
        except RuntimeError as e:  # no valid transition yet
            raise ValueError(str(e)) from None
        return out

    def gather(self, indices, out: Batch | None = None) -> Batch:
        """Gathers the transitions at explicit ``indices`` (all must be valid)."""
        idx = _int_vector("indices", indices)
        if len(idx) == 0:
            return self._alloc(0)
        out = self._out(len(idx), out)
        if self._dev_frames is not None:
            return self._fill_device(out, idx)
        self._ring._gather(idx, *out._arrays())
        return out

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
            "version": _FORMAT_VERSION,
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
        }

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the ring's contents to one ``.npz`` file, atomically.

        The file is a plain numpy archive (``np.load`` reads it): ``meta``
        (JSON), ``frames`` [num_envs, segment, frame_bytes] uint8, ``actions``,
        ``rewards``, ``flags`` [num_envs, segment], ``cursors`` [num_envs] and,
        written last, ``sha256``: the checksum of everything before it
        (``_digest``), which ``load`` verifies.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        arrays = dict(self._ring._storage())
        if self._dev_frames is not None:  # frames from the device, in the same layout as a host ring's
            arrays["frames"] = (
                self._dev_frames.cpu()
                .numpy()
                .view(np.uint8)
                .reshape(self.num_envs, self.segment_capacity, self.frame_bytes)
            )
        meta = json.dumps(self._meta())
        h = _digest(meta)
        for name in _ARRAY_NAMES:
            _feed(h, name, arrays[name])
        with atomic_open(path) as f:
            np.savez(f, meta=np.array(meta), **{n: arrays[n] for n in _ARRAY_NAMES}, sha256=np.array(h.hexdigest()))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        num_threads: int | None = None,
        check_memory: bool = True,
        frames_device: str | torch.device | None = None,
        num_actions: int | None = None,
    ) -> "ReplayRing":
        """Rebuilds a ring saved by ``save`` (contents, cursors and RNG state), frames where ``frames_device`` says.

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
                return cls._load(z, path, num_threads, check_memory, frames_device, num_actions)
        except ReplayFileError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OverflowError, OSError, EOFError) as e:
            msg = str(e).replace("\n", " ")
            raise ReplayFileError(
                f"replay file {path} is truncated or corrupt ({type(e).__name__}: {msg}); delete it to start with "
                "an empty ring"
            ) from None

    @classmethod
    def _load(cls, z, path: Path, num_threads, check_memory, frames_device, num_actions) -> "ReplayRing":
        def bad(what: str) -> ReplayFileError:
            return ReplayFileError(f"replay file {path} is invalid: {what}; delete it to start with an empty ring")

        meta_text = str(z["meta"])
        meta = json.loads(meta_text)
        if (
            not isinstance(meta, dict)
            or meta.get("format") != "dqnfast-replay"
            or meta.get("version") not in _READ_VERSIONS
        ):
            raise ReplayFileError(f"{path} is not a dqnfast replay file of version {_FORMAT_VERSION}")
        # version 1 predates the checksum: its arrays are covered by the zip CRCs and the checks below
        expect_digest = None
        if meta["version"] >= 2:
            if "sha256" not in z.files:
                raise bad("no checksum")
            expect_digest = str(z["sha256"])
        if num_actions is None:
            num_actions = meta.get("num_actions")
        rng_state = meta["rng_state"]
        if isinstance(rng_state, bool) or not isinstance(rng_state, int) or not 0 <= rng_state < _U64:
            raise bad(f"rng_state {rng_state!r} is not a uint64")
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
            num_actions,
        )
        h = _digest(meta_text)
        views = dict(ring._ring._storage())
        if ring._dev_frames is not None:  # a stand-in for the shape check; the frames go to the device
            views["frames"] = np.lib.stride_tricks.as_strided(
                np.zeros(1, np.uint8), (ring.num_envs, ring.segment_capacity, ring.frame_bytes), (0, 0, 0)
            )
        for name in _ARRAY_NAMES:
            view = views[name]
            arr = z[name]
            if arr.shape != view.shape or arr.dtype != view.dtype:
                raise bad(f"array {name} has {arr.dtype}{list(arr.shape)}, expected {view.dtype}{list(view.shape)}")
            _feed(h, name, arr)
            if name == "frames" and ring._dev_frames is not None:
                # straight from the file's array to the device, one env segment at a time
                seg = ring.segment_capacity
                for e in range(ring.num_envs):
                    ring._dev_frames[e * seg : (e + 1) * seg].copy_(
                        torch.from_numpy(
                            np.ascontiguousarray(arr[e]).view(ring.frame_dtype).reshape(seg, *ring.frame_shape)
                        )
                    )
                del arr
                continue
            view[...] = arr
            del arr
        if expect_digest is not None and h.hexdigest() != expect_digest:
            raise bad("checksum mismatch (its contents changed after it was written)")
        problem = ring._check_contents(views)
        if problem:
            raise bad(problem)
        ring.rng_state = rng_state
        ring._ring.rebuild_index()
        return ring

    def _check_contents(self, views: dict) -> str | None:
        """What makes the raw arrays inconsistent with this ring, or None (vectorised, one pass each)."""
        cursors, actions, rewards, flags = views["cursors"], views["actions"], views["rewards"], views["flags"]
        if (cursors < 0).any() or (cursors >= _MAX_CURSOR).any():
            bad = cursors[(cursors < 0) | (cursors >= _MAX_CURSOR)][0]
            return f"cursor {int(bad)} outside [0, 2^{_MAX_CURSOR.bit_length() - 1})"
        action_end = self.num_actions or _INT32
        if actions.size and (actions.min() < 0 or actions.max() >= action_end):
            bad = actions.min() if actions.min() < 0 else actions.max()
            return f"action {int(bad)} outside [0, {action_end})"
        if not np.isfinite(rewards).all():
            return f"reward {rewards[~np.isfinite(rewards)][0]} is not finite"
        if (flags & ~np.uint8(_FLAG_BITS)).any():
            return f"flags {int(flags[(flags & ~np.uint8(_FLAG_BITS)) != 0][0]):#04x} have bits no step sets"
        # an env with fewer adds than its segment has slots it never wrote: they must still be empty
        unwritten = np.arange(self.segment_capacity)[None, :] >= cursors[:, None]
        if (actions[unwritten] != 0).any() or (rewards[unwritten] != 0).any() or (flags[unwritten] != 0).any():
            return "a slot beyond its env's cursor holds data"
        frames = views["frames"]
        if self._dev_frames is None and self.frame_dtype.kind == "f":
            if not np.isfinite(frames.view(self.frame_dtype)).all():
                return "a frame holds a non-finite value"
        return None


_FORMAT_VERSION = 2
_READ_VERSIONS = (1, 2)
_ARRAY_NAMES = ("frames", "actions", "rewards", "flags", "cursors")
_FLAG_BITS = 1 | 2 | 4  # terminated, truncated, first (csrc/replay_ring.h)
# More adds than any env makes (2^48 steps is 9 years at a million steps a second); below it the core's
# step arithmetic (step + n_step, step % segment) stays far from int64 overflow.
_MAX_CURSOR = 2**48


def _digest(meta_text: str):
    """A sha256 over a replay file's meta and arrays, fed in file order by ``_feed``."""
    h = hashlib.sha256()
    h.update(b"dqnfast-replay\0")
    h.update(meta_text.encode())
    return h


def _feed(h, name: str, arr: np.ndarray) -> None:
    h.update(f"\0{name}:{arr.dtype.str}:{list(arr.shape)}\0".encode())
    a = np.ascontiguousarray(arr)
    chunk = 1 << 26  # bounded slices: hashlib releases the GIL on each
    flat = a.reshape(-1).view(np.uint8) if a.size else a.reshape(-1)
    for i in range(0, flat.size, chunk):
        h.update(flat[i : i + chunk].data)


_META_NAMES = ("action", "reward", "discount", "index")


def _meta_tensors(b: int, **kw) -> list[torch.Tensor]:
    """Empty per-row action int64, reward float32, discount float32, index int64 tensors."""
    return [torch.empty(b, dtype=dt, **kw) for dt in (torch.int64, torch.float32, torch.float32, torch.int64)]


def _inner_contiguous(a: np.ndarray) -> bool:
    expect = a.itemsize
    for d in range(a.ndim - 1, 0, -1):
        if a.strides[d] != expect:
            return False
        expect *= a.shape[d]
    return True
