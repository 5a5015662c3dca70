"""Tabular learners: numba-compiled loops against the same source run as plain Python.

Measured side by side in one run, on the textbook three-state MDP and on a random MDP
(default 200 states x 5 actions, 10 successors per allowed action, 80% of actions allowed):

    value_iteration   Q-value iteration sweeps (dqnfast.agent.tabular's kernel; sweeps/s)
    q_learning        Q-learning steps of random exploration (the kernel; steps/s)

Each contender is the kernel itself called with prepared arrays, compiled (``kernel``) and
as plain Python (``kernel.py_func``), with the same work per call: the figures are the loops,
not argument checks. The two alternate repetition by repetition, so that a machine whose
load changes during the run slows both alike; the speed-up is the median of the
per-repetition ratios. Compilation happens before timing (numba caches it on disk).

    python benchmarks/tabular.py                 # about a minute on an idle 2-core machine
    python benchmarks/tabular.py --quick         # seconds: smoke test, figures not meaningful
    python benchmarks/tabular.py --states 500 --actions 4 --json /tmp/tabular.json

Prints a table and ``NAME = value unit`` lines; saves JSON (default
benchmarks/results/tabular.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import Metrics, cpu_snapshot, foreign_cores, machine_info, print_table, save_json  # noqa: E402

from dqnfast.agent import tabular  # noqa: E402

GAMMA = 0.9


def _timed(fn, min_time: float) -> tuple[float, int]:
    """Calls fn until min_time seconds have passed; returns (seconds, calls)."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt, n


def side_by_side(compiled, python, work: float, reps: int, min_time: float) -> dict:
    """Rates (work units per second) of two callables, alternating repetitions."""
    compiled()  # compile (or load numba's cache) and warm up
    python()
    c_rates, p_rates, ratios, foreign = [], [], [], []
    for _ in range(reps):
        snap = cpu_snapshot()
        dt, n = _timed(compiled, min_time)
        c = work * n / dt
        dt, n = _timed(python, min_time)
        p = work * n / dt
        f = foreign_cores(snap, cpu_snapshot())
        c_rates.append(c)
        p_rates.append(p)
        ratios.append(c / p)
        if f is not None:
            foreign.append(f)
    return {
        "numba": statistics.median(c_rates),
        "python": statistics.median(p_rates),
        "speedup": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "numba_rates": c_rates,
        "python_rates": p_rates,
        "other_cpu": max(foreign) if foreign else None,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes and times: a smoke test")
    p.add_argument("--states", type=int, default=None, help="random MDP states (default 200; --quick 30)")
    p.add_argument("--actions", type=int, default=5, help="random MDP actions (default 5)")
    p.add_argument("--reps", type=int, default=None, help="alternating repetitions (default 5; --quick 1)")
    p.add_argument(
        "--min-time", type=float, default=None, help="seconds per contender per repetition (default 1.0; --quick 0.02)"
    )
    p.add_argument(
        "--json",
        "--out",
        dest="json",
        type=Path,
        default=_HERE / "results" / "tabular.json",
        help="where to save the JSON (default benchmarks/results/tabular.json)",
    )
    a = p.parse_args(argv)
    a.states = a.states if a.states is not None else (30 if a.quick else 200)
    a.reps = a.reps if a.reps is not None else (1 if a.quick else 5)
    a.min_time = a.min_time if a.min_time is not None else (0.02 if a.quick else 1.0)
    if a.states < 1 or a.actions < 1 or a.reps < 1 or a.min_time <= 0:
        p.error("--states, --actions, --reps and --min-time must be positive")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    mdps = {
        "three_state": tabular.three_state_mdp(),
        "random": tabular.random_mdp(args.states, args.actions, seed=0),
    }
    # Work per call: the same for both contenders, enough for plain Python to take ~0.05-0.5 s.
    sweeps = {"three_state": 20 if args.quick else 200, "random": 1 if args.quick else 3}
    steps = 2_000 if args.quick else 20_000
    vi_kernel, ql_kernel = tabular._q_value_iteration_kernel, tabular._q_learning_kernel

    metrics, rows = Metrics(), []
    for name, mdp in mdps.items():
        allowed = mdp.allowed
        n = sweeps[name]
        # tol -1: never stop early, every call runs exactly n sweeps.
        vi_args = (mdp.T, mdp.R, allowed, GAMMA, n, -1.0, False)
        r = side_by_side(
            lambda a=vi_args: vi_kernel(*a), lambda a=vi_args: vi_kernel.py_func(*a), n, args.reps, args.min_time
        )
        rows.append({"mdp": name, "algorithm": "value_iteration", "unit": "sweeps/s", "work_per_call": n, **r})

        cdf, actions, n_allowed = tabular._sampling_tables(mdp)
        ql_args = (cdf, mdp.R, actions, n_allowed, GAMMA, steps, tabular.DEFAULT_ALPHA0, tabular.DEFAULT_DECAY, 0, 0, 0)
        r = side_by_side(
            lambda a=ql_args: ql_kernel(*a), lambda a=ql_args: ql_kernel.py_func(*a), steps, args.reps, args.min_time
        )
        rows.append({"mdp": name, "algorithm": "q_learning", "unit": "steps/s", "work_per_call": steps, **r})

    size = {"three_state": "3x3", "random": f"{args.states}x{args.actions}"}
    print_table(
        [{**r, "size": size[r["mdp"]]} for r in rows],
        [
            ("algorithm", "algorithm"),
            ("mdp", "MDP"),
            ("size", "S x A"),
            ("unit", "unit"),
            ("numba", "numba"),
            ("python", "python"),
            ("speedup", "speed-up"),
            ("speedup_min", "min"),
            ("speedup_max", "max"),
            ("other_cpu", "other CPU"),
        ],
        title=f"numba vs plain Python, same kernels, gamma {GAMMA}, {args.reps} alternating reps",
    )
    for r in rows:
        key = f"tabular.{r['algorithm']}_{r['mdp']}"
        metrics.emit(f"{key}_numba", r["numba"], r["unit"])
        metrics.emit(f"{key}_python", r["python"], r["unit"])
        metrics.emit(f"{key}_speedup", r["speedup"], "x", note="numba / plain Python, median of alternating reps")
    busy = [r["other_cpu"] for r in rows if r["other_cpu"] is not None]
    if busy and max(busy) > 0.1:
        print(
            f"note: other processes used up to {max(busy):.2f} cores during the run; "
            "both contenders shared that load, the ratios are the figures to read",
            flush=True,
        )
    path = save_json(
        args.json,
        "tabular",
        config={
            "quick": args.quick,
            "states": args.states,
            "actions": args.actions,
            "reps": args.reps,
            "min_time": args.min_time,
            "gamma": GAMMA,
            "sweeps_per_call": sweeps,
            "steps_per_call": steps,
        },
        results=rows,
        metrics=metrics,
        machine=machine_info(packages=("numba", "numpy")),
    )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
