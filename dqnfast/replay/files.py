"""The replay file format: one ``.npz`` archive per saved ring, versioned and checksummed.

Entries, in file order: ``meta`` (JSON: format, version, the ring's shape, seed, RNG state),
then the arrays of ``ARRAY_NAMES`` -- ``frames`` uint8[num_envs, slots, frame_bytes],
``actions`` int32, ``rewards`` float32, ``flags`` uint8 (all [num_envs, segment]), ``cursors``
int64[num_envs] -- then, for a prioritized ring only, ``priorities`` float64[num_envs,
segment] (p_i of every slot; 0 where never written) and, written last, ``sha256``: the checksum
of everything before it (``digest`` then ``feed`` per array), which loading verifies before
trusting anything. Version 3 adds ``meta["sampler"]``: ``{"kind": "uniform"}`` or
``{"kind": "prioritized", "alpha", "priority_eps", "max_priority"}``; the generation of a slot
is the step it holds, so the cursors carry it. Version 2 files (no sampler entry) load as
uniform rings; version 1 predates the checksum (the zip CRCs and the content checks cover it).
Version 4 keeps only the first ``slots`` frames of each env's segment, every slot any env has
written (the whole segment once one has wrapped): a ring that is not full, such as the warm-up's,
costs what it holds. Older versions always hold ``slots = segment``.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = [
    "ARRAY_NAMES",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "ReplayFileError",
    "check_contents",
    "digest",
    "feed",
]

FORMAT_VERSION = 4
READ_VERSIONS = (1, 2, 3, 4)
ARRAY_NAMES = ("frames", "actions", "rewards", "flags", "cursors")
PRIORITY_NAME = "priorities"  # after ARRAY_NAMES, prioritized rings only
FLAG_BITS = 1 | 2 | 4  # terminated, truncated, first (csrc/replay_ring.h)
# More adds than any env makes (2^48 steps is 9 years at a million steps a second); below it the core's
# step arithmetic (step + n_step, step % segment) stays far from int64 overflow.
MAX_CURSOR = 2**48
_INT32 = 2**31
# A slot's priority is a float32 |TD error| plus priority_eps, and a run's max_priority is the largest
# of them (1 before any): nothing a run writes is above FLT_MAX + priority_eps. Above it a sum of
# priorities over the ring could overflow float64 and every draw land on one slot.
MAX_TD = float(np.finfo(np.float32).max)


class ReplayFileError(ValueError):
    """A saved ring file is truncated, corrupt or of another format."""


def digest(meta_text: str):
    """A sha256 over a replay file's meta and arrays, fed in file order by ``feed``."""
    h = hashlib.sha256()
    h.update(b"dqnfast-replay\0")
    h.update(meta_text.encode())
    return h


def feed(h, name: str, arr: np.ndarray) -> None:
    h.update(f"\0{name}:{arr.dtype.str}:{list(arr.shape)}\0".encode())
    a = np.ascontiguousarray(arr)
    chunk = 1 << 26  # bounded slices: hashlib releases the GIL on each
    flat = a.reshape(-1).view(np.uint8) if a.size else a.reshape(-1)
    for i in range(0, flat.size, chunk):
        h.update(flat[i : i + chunk].data)


def check_contents(
    views: dict,
    *,
    segment: int,
    num_actions: int | None,
    frames: np.ndarray | None,
    max_priority: float = 1.0,
    priority_eps: float = 0.0,
    frame_slots: int | None = None,
) -> str | None:
    """What makes a loaded ring's raw arrays inconsistent, or None (vectorised, one pass each).

    views: the core's actions, rewards, flags, cursors (and priorities) as loaded. frames: the frames as
    frame_dtype values when they are floats to check for non-finite values, else None. max_priority,
    priority_eps: a prioritized file's sampler entry; no priority may be above its max_priority, nor
    that above what a run can report (``MAX_TD`` + priority_eps). frame_slots: the slots of each
    segment whose frames the file holds (None: all of them).
    """
    cursors, actions, rewards, flags = views["cursors"], views["actions"], views["rewards"], views["flags"]
    if (cursors < 0).any() or (cursors >= MAX_CURSOR).any():
        bad = cursors[(cursors < 0) | (cursors >= MAX_CURSOR)][0]
        return f"cursor {int(bad)} outside [0, 2^{MAX_CURSOR.bit_length() - 1})"
    action_end = num_actions or _INT32
    if actions.size and (actions.min() < 0 or actions.max() >= action_end):
        bad = actions.min() if actions.min() < 0 else actions.max()
        return f"action {int(bad)} outside [0, {action_end})"
    if not np.isfinite(rewards).all():
        return f"reward {rewards[~np.isfinite(rewards)][0]} is not finite"
    if (flags & ~np.uint8(FLAG_BITS)).any():
        return f"flags {int(flags[(flags & ~np.uint8(FLAG_BITS)) != 0][0]):#04x} have bits no step sets"
    if frame_slots is not None and cursors.size and int(np.minimum(cursors, segment).max()) > frame_slots:
        return f"the file holds the frames of {frame_slots} slots per env, but an env has written more"
    # an env with fewer adds than its segment has slots it never wrote: they must still be empty
    unwritten = np.arange(segment)[None, :] >= cursors[:, None]
    if (actions[unwritten] != 0).any() or (rewards[unwritten] != 0).any() or (flags[unwritten] != 0).any():
        return "a slot beyond its env's cursor holds data"
    if frames is not None and frames.dtype.kind == "f" and not np.isfinite(frames).all():
        return "a frame holds a non-finite value"
    prio = views.get(PRIORITY_NAME)
    if prio is not None:
        if not np.isfinite(prio).all():
            return "a priority is not finite"
        if (prio[unwritten] != 0).any() or (prio[~unwritten] <= 0).any():
            return "a written slot has a priority <= 0 or an unwritten one a priority"
        if max_priority > MAX_TD + priority_eps:
            return (
                f"max_priority {max_priority!r} is above any priority a run reports (a float32 |TD error| "
                f"plus priority_eps: at most {MAX_TD + priority_eps:g})"
            )
        above = prio > max_priority
        if above.any():
            env, slot = (int(i[0]) for i in np.nonzero(above))
            return f"priority {float(prio[env, slot])!r} (env {env}, slot {slot}) is above the file's max_priority {max_priority!r}"
    return None
