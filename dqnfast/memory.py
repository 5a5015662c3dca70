"""How much memory this process may still commit, and the headroom rule every budget uses.

No torch import: cheap for any process. Three sources are read and the tightest wins:

* ``MemAvailable`` of ``/proc/meminfo`` (the kernel's estimate of what can be allocated
  without swapping: free memory plus reclaimable caches);
* a cgroup v2 limit: ``memory.max`` minus ``memory.current`` of this process's cgroup and
  of each cgroup above it (containers, SLURM jobs, systemd slices);
* a cgroup v1 limit: ``memory.limit_in_bytes`` (or the ``hierarchical_memory_limit`` of
  ``memory.stat``, which includes the parents' limits) minus ``memory.usage_in_bytes``.

A cgroup's usage counts the page cache; its inactive file pages are reclaimed before the
OOM killer acts, so they count as available (as ``docker stats`` does).

The rule (``fits``): what a run plans to allocate must be at most ``HEADROOM`` (90%) of
the available memory minus ``MARGIN`` (512 MiB). Pages are committed as they are
written, so a budget that only just fits is killed hours into a run; the 10% absorbs
other processes' growth and the margin the interpreter, torch's allocator and the
loggers, which no estimate lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "HEADROOM",
    "MARGIN",
    "Available",
    "MemoryBudgetError",
    "MemorySources",
    "available_memory",
    "available_memory_bytes",
    "memory_limits",
    "plannable_bytes",
]

HEADROOM = 0.9
MARGIN = 512 * 2**20
_UNLIMITED = 2**62  # cgroup v1 writes PAGE_COUNTER_MAX (~2^63) for "no limit"


@dataclass(frozen=True)
class MemorySources:
    """Where the limits are read from; tests point these at fake files."""

    meminfo: Path = Path("/proc/meminfo")
    self_cgroup: Path = Path("/proc/self/cgroup")
    cgroup_root: Path = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Available:
    """``nbytes`` this process may still commit according to ``source`` (words for a message)."""

    nbytes: int
    source: str


class MemoryBudgetError(MemoryError):
    """A planned allocation does not fit the memory available (the message is one line)."""


def _read(p: Path) -> str | None:
    try:
        return p.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _int(p: Path) -> int | None:
    text = _read(p)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None  # "max" (cgroup v2: no limit) or garbage


def _stat(p: Path, key: str) -> int:
    for line in (_read(p) or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            try:
                return int(v)
            except ValueError:
                return 0
    return 0


def _mem_available(src: MemorySources) -> Available:
    for line in (_read(src.meminfo) or "").splitlines():
        if line.startswith("MemAvailable:"):
            try:
                return Available(int(line.split()[1]) * 1024, "MemAvailable")
            except (IndexError, ValueError):
                break
    try:
        return Available(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory")
    except (OSError, ValueError):
        return Available(2**63, "no memory information")


def _cgroup_paths(src: MemorySources) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory-controller path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in (_read(src.self_cgroup) or "").splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _levels(base: Path, rel: str) -> list[Path]:
    """The cgroup dir of ``rel`` under ``base`` and every dir above it up to ``base``.

    Inside a container the path may name the host's hierarchy, which is not mounted:
    then ``base`` itself is the container's cgroup.
    """
    d = base / rel.strip("/")
    if not d.is_dir():
        return [base]
    out = [d]
    while d != base and base in d.parents:
        d = d.parent
        out.append(d)
    return out


def _cgroup_v2(src: MemorySources, rel: str) -> list[Available]:
    found = []
    for base in (src.cgroup_root, src.cgroup_root / "unified"):
        for d in _levels(base, rel):
            limit = _int(d / "memory.max")
            if limit is None:
                continue
            used = (_int(d / "memory.current") or 0) - _stat(d / "memory.stat", "inactive_file")
            found.append(Available(limit - max(0, used), f"cgroup v2 memory.max of {d}"))
        if found:
            break
    return found


def _cgroup_v1(src: MemorySources, rel: str) -> list[Available]:
    found = []
    for d in _levels(src.cgroup_root / "memory", rel):
        limit = _int(d / "memory.limit_in_bytes")
        if limit is None:
            continue
        hier = _stat(d / "memory.stat", "hierarchical_memory_limit")
        if hier:
            limit = min(limit, hier)
        if limit >= _UNLIMITED:
            continue
        used = (_int(d / "memory.usage_in_bytes") or 0) - _stat(d / "memory.stat", "total_inactive_file")
        found.append(Available(limit - max(0, used), f"cgroup v1 memory.limit_in_bytes of {d}"))
    return found


def memory_limits(sources: MemorySources | None = None) -> list[Available]:
    """Every limit that applies to this process: MemAvailable first, then the cgroups' (each level)."""
    src = sources or MemorySources()
    v2, v1 = _cgroup_paths(src)
    found = [_mem_available(src)]
    if v2 is not None:
        found += _cgroup_v2(src, v2)
    if v1 is not None:
        found += _cgroup_v1(src, v1)
    return found


def available_memory(sources: MemorySources | None = None) -> Available:
    """The tightest of ``memory_limits`` (never negative)."""
    tight = min(memory_limits(sources), key=lambda a: a.nbytes)
    return Available(max(0, tight.nbytes), tight.source)


def available_memory_bytes(sources: MemorySources | None = None) -> int:
    """Memory this process can still commit: the tightest of MemAvailable and the cgroup limits."""
    return available_memory(sources).nbytes


def plannable_bytes(avail: int) -> int:
    """What a budget may plan to allocate out of ``avail`` bytes: 90% of it minus 512 MiB."""
    return max(0, int(avail * HEADROOM) - MARGIN)
