"""How torch's OpenMP workers wait, set before torch loads: what lets a CPU run use every core.

torch's CPU kernels split each operation over OpenMP threads that meet at a barrier when it ends.
GNU OpenMP (the ``libgomp`` torch ships) makes a thread that reaches a barrier early spin for up to
300,000 iterations before it sleeps. On a machine a run has to itself that is fastest; when another
process holds one of the cores, the spinning thread burns the time the descheduled one needs, and
the run slows down several times over. Timed on a 2-core AMD EPYC (AVX2), one default DQN update
(batch 32, Nature CNN), ms per update (``benchmarks/RESULTS.md``, "Every core"):

| busy processes beside it | 1 thread | 2 threads, default spin | 2 threads, ``GOMP_SPINCOUNT=1000`` |
|---|---:|---:|---:|
| none | 58 | 33 | 37 |
| one | 53 | 90 | 64 |
| two | 95 | 210 | 100 |

With the spin shortened to ``SHORT_SPIN`` iterations, two threads keep most of their gain on a
quiet machine and lose little on a busy one, so the trainer can give torch every core
(``dqnfast.config.resolve.thread_counts``). libgomp reads its environment once, when it is loaded
(with ``import torch``), so ``shorten_spin`` runs first thing in the command lines, before any
import of torch, and never overrides a setting of the user's (``GOMP_SPINCOUNT``,
``OMP_WAIT_POLICY``). Standard library only: this module is imported before torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

__all__ = ["SHORT_SPIN", "shorten_spin", "spin_is_short"]

SHORT_SPIN = 1000  # libgomp's own choice when a machine has more OpenMP threads than CPUs


def shorten_spin(environ: dict[str, str] | None = None, modules: Mapping[str, object] | None = None) -> bool:
    """Sets ``GOMP_SPINCOUNT=SHORT_SPIN`` unless the user chose how OpenMP waits or torch is already loaded.

    Returns whether it set it. ``environ``/``modules`` default to ``os.environ``/``sys.modules``.
    """
    env = os.environ if environ is None else environ
    loaded = sys.modules if modules is None else modules
    if "GOMP_SPINCOUNT" in env or "OMP_WAIT_POLICY" in env or "torch" in loaded:
        return False
    env["GOMP_SPINCOUNT"] = str(SHORT_SPIN)
    return True


def spin_is_short(environ: Mapping[str, str] | None = None) -> bool:
    """Whether OpenMP's workers sleep soon at a barrier: ``OMP_WAIT_POLICY=passive``, or a
    ``GOMP_SPINCOUNT`` of at most ``SHORT_SPIN`` (what was measured to keep a busy core cheap: at
    10,000 two threads already ran 1.9x slower than one beside a busy process).

    Read from the environment, which is what libgomp read when torch was loaded, as long as
    nothing changed it after that (``shorten_spin`` does not).
    """
    env = os.environ if environ is None else environ
    policy = env.get("OMP_WAIT_POLICY", "").strip().lower()
    if policy == "passive":
        return True
    if policy == "active":
        return False
    spin = env.get("GOMP_SPINCOUNT", "").strip().lower()
    scale = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}.get(spin[-1:], 1)  # libgomp's suffixes
    try:
        return float(spin[:-1] if scale > 1 else spin) * scale <= SHORT_SPIN  # "infinite": not a number
    except ValueError:
        return False
