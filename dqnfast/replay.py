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

import json
import math
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dqnfast import _core
from dqnfast.atomic import atomic_open
from dqnfast.memory import available_memory_bytes

__all__ = ["Batch", "ReplayRing", "ReplayMemoryError", "ReplayFileError", "available_memory_bytes"]

_FORMAT_VERSION = 1
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
    """

    obs: torch.Tensor
    next_obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "Batch":
        """Copies every tensor to ``device`` (asynchronously from pinned memory)."""
        return Batch(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))

    def __len__(self) -> int:
        return self.action.shape[0]

    def _arrays(self) -> tuple[np.ndarray, ...]:
        cached = self.__dict__.get("_np")
        if cached is None:
            for f in fields(self):
                t = getattr(self, f.name)
                if t.device.type != "cpu":
                    raise ValueError(f"out.{f.name} must be a CPU tensor (got {t.device}); copy to the GPU after sampling")
            cached = tuple(getattr(self, f.name).numpy() for f in fields(self))
            self.__dict__["_np"] = cached
        return cached


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


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
        check_memory: refuse, before allocating, a ring that would not fit in RAM.
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
    ) -> None:
        capacity = _positive_int("capacity", capacity)
        self.num_envs = _positive_int("num_envs", num_envs)
        self.stack = _positive_int("stack", stack)
        self.n_step = _positive_int("n_step", n_step)
        if not (0.0 <= float(gamma) <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        if not self.frame_shape or any(d <= 0 for d in self.frame_shape):
            raise ValueError(f"frame_shape must be non-empty positive dims, got {frame_shape!r}")
        self.frame_dtype = np.dtype(frame_dtype)
        if self.frame_dtype not in _TORCH_DTYPES:
            raise ValueError(f"frame_dtype {self.frame_dtype} not supported; use one of {sorted(map(str, _TORCH_DTYPES))}")
        self.obs_shape = (self.stack, *self.frame_shape) if self.stack > 1 else self.frame_shape
        self.frame_bytes = math.prod(self.frame_shape) * self.frame_dtype.itemsize
        self.seed = int(seed)
        if num_threads is None:
            num_threads = os.cpu_count() or 1
        num_threads = _positive_int("num_threads", num_threads)

        slots = (capacity // self.num_envs) * self.num_envs
        self.nbytes = slots * _core.bytes_per_slot(self.frame_bytes)
        if check_memory:
            avail = available_memory_bytes()
            if self.nbytes > avail:
                fit = avail // _core.bytes_per_slot(self.frame_bytes)
                raise ReplayMemoryError(
                    f"replay capacity {capacity} needs {self.nbytes / 1e9:.2f} GB of RAM but only "
                    f"{avail / 1e9:.2f} GB is available; lower the capacity to at most {fit}"
                )
        self._ring = _core._ReplayRing(
            capacity, self.num_envs, self.frame_bytes, self.stack, self.n_step, self.gamma, self.seed, num_threads
        )
        self.capacity = self._ring.capacity
        self.segment_capacity = self._ring.segment_capacity

    # ----------------------------------------------------------------- writing
    def add(self, env_ids, frames, actions, rewards, terminated, truncated, first) -> None:
        """Appends one step for each env in ``env_ids`` (any subset, any order).

        env_ids: int[K]; frames: frame_dtype[K, *frame_shape] (axis 0 may be
        strided, e.g. ``obs[:, -1]``); actions: int[K]; rewards: float[K];
        terminated, truncated, first: bool[K].
        """
        env_ids = np.asarray(env_ids)
        if env_ids.size == 0:
            return
        if env_ids.dtype.kind not in "iu":
            raise ValueError(f"env_ids must be integers, got dtype {env_ids.dtype}")
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
        actions = np.asarray(actions)
        if actions.dtype.kind not in "iu":
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        self._ring._add(
            env_ids.astype(np.int64, copy=False).ravel(),
            frames,
            actions.astype(np.int64, copy=False).ravel(),
            np.asarray(rewards, dtype=np.float32).ravel(),
            np.asarray(terminated, dtype=bool).ravel(),
            np.asarray(truncated, dtype=bool).ravel(),
            np.asarray(first, dtype=bool).ravel(),
        )

    # ---------------------------------------------------------------- sampling
    def make_batch(self, batch_size: int, pin_memory: bool = False) -> Batch:
        """Allocates reusable output tensors for ``sample``/``gather``."""
        return self._alloc(_positive_int("batch_size", batch_size), pin_memory)

    def _alloc(self, b: int, pin_memory: bool = False) -> Batch:
        tdt = _TORCH_DTYPES[self.frame_dtype]
        kw = {"pin_memory": pin_memory}
        return Batch(
            obs=torch.empty((b, *self.obs_shape), dtype=tdt, **kw),
            next_obs=torch.empty((b, *self.obs_shape), dtype=tdt, **kw),
            action=torch.empty(b, dtype=torch.int64, **kw),
            reward=torch.empty(b, dtype=torch.float32, **kw),
            discount=torch.empty(b, dtype=torch.float32, **kw),
            index=torch.empty(b, dtype=torch.int64, **kw),
        )

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
            self._ring._sample(*out._arrays())
        except RuntimeError as e:  # no valid transition yet
            raise ValueError(str(e)) from None
        return out

    def gather(self, indices, out: Batch | None = None) -> Batch:
        """Gathers the transitions at explicit ``indices`` (all must be valid)."""
        idx = np.ascontiguousarray(indices, dtype=np.int64).ravel()
        if len(idx) == 0:
            return self._alloc(0)
        out = self._out(len(idx), out)
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
        return self._ring.locate(np.ascontiguousarray(indices, dtype=np.int64).ravel())

    @property
    def rng_state(self) -> int:
        return self._ring.rng_state

    @rng_state.setter
    def rng_state(self, value: int) -> None:
        self._ring.rng_state = int(value)

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
        }

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Writes the ring's contents to one ``.npz`` file, atomically.

        The file is a plain numpy archive (``np.load`` reads it): ``meta``
        (JSON), ``frames`` [num_envs, segment, frame_bytes] uint8, ``actions``,
        ``rewards``, ``flags`` [num_envs, segment] and ``cursors`` [num_envs].
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        with atomic_open(path) as f:
            np.savez(f, meta=np.array(json.dumps(self._meta())), **self._ring._storage())
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, num_threads: int | None = None, check_memory: bool = True
    ) -> "ReplayRing":
        """Rebuilds a ring saved by ``save`` (contents, cursors and RNG state)."""
        path = Path(path)
        if not path.exists() and path.with_name(path.name + ".npz").exists():
            path = path.with_name(path.name + ".npz")
        if not path.exists():
            raise FileNotFoundError(f"no saved replay at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != "dqnfast-replay" or meta.get("version") != _FORMAT_VERSION:
                    raise ReplayFileError(f"{path} is not a dqnfast replay file of version {_FORMAT_VERSION}")
                ring = cls(
                    meta["capacity"], meta["num_envs"], meta["frame_shape"], np.dtype(meta["frame_dtype"]),
                    meta["stack"], meta["n_step"], meta["gamma"], meta["seed"], num_threads, check_memory,
                )
                views = ring._ring._storage()
                for name, view in views.items():
                    arr = z[name]
                    if arr.shape != view.shape or arr.dtype != view.dtype:
                        raise ReplayFileError(
                            f"{path}: array {name} has {arr.dtype}{list(arr.shape)}, expected {view.dtype}{list(view.shape)}"
                        )
                    view[...] = arr
                if (views["cursors"] < 0).any():
                    raise ReplayFileError(f"{path}: negative cursor")
                ring.rng_state = int(meta["rng_state"])
                ring._ring.rebuild_index()
                return ring
        except ReplayFileError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError, json.JSONDecodeError) as e:
            raise ReplayFileError(
                f"replay file {path} is truncated or corrupt ({type(e).__name__}: {e}); delete it to start with an empty ring"
            ) from None


def _inner_contiguous(a: np.ndarray) -> bool:
    expect = a.itemsize
    for d in range(a.ndim - 1, 0, -1):
        if a.strides[d] != expect:
            return False
        expect *= a.shape[d]
    return True
