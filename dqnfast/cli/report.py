"""``python -m dqnfast.report DIR [DIR ...]``: the sweep report's command line (argparse)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import yaml

from dqnfast import report
from dqnfast.cli.overrides import sweep_jobs


def planned_jobs(sweep_dir: Path) -> list[list[str]] | None:
    """The overrides of every job a basic-sweeper sweep launches, from its ``multirun.yaml``; None if unknown.

    Hydra writes ``multirun.yaml`` (the sweep's command line and sweeper) before the first
    job starts, so the plan is there even when the sweep stopped early. A sweeper that
    picks its jobs as it goes (Optuna), or a file that cannot be read, gives None.
    """
    try:
        cfg = yaml.safe_load((sweep_dir / "multirun.yaml").read_bytes().decode("utf-8"))
        hydra = cfg["hydra"]
        sweeper = hydra.get("sweeper") or {}
        task = [str(o) for o in hydra["overrides"]["task"]]
        params = sweeper.get("params") or None
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    listed = sweep_jobs(task, params if isinstance(params, dict) else None)
    return listed[0] if listed else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dqnfast.report DIR [DIR ...] [--out DIR]``: writes report.md/.png/.csv."""
    p = argparse.ArgumentParser(
        prog="python -m dqnfast.report",
        description=report.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", help="Hydra multirun dir(s) (multirun/DATE/TIME) or run dirs")
    p.add_argument("--out", default=None, help="where to write report.md/.png/.csv (default: the first dir)")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the IQM's CI (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    args = p.parse_args(argv)
    sweeps = [f.parent for d in map(Path, args.dirs) if d.is_dir() for f in d.rglob("multirun.yaml")]
    planned = {d: plan for d in sweeps if (plan := planned_jobs(d)) is not None}
    try:
        paths = report.write_report(args.dirs, args.out, reps=args.reps, seed=args.seed, planned=planned)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in paths["skipped"]:
        print(f"warning: skipped {s.path}: {s.reason}", file=sys.stderr)
    for r in paths["rows"]:
        print(
            f"{r.game:<16} {r.config:<40} n={r.n:<3} {report.score_text(r):>20} CI {report.ci_text(r.ci_low, r.ci_high)}"
        )
    for j in paths["failed"]:
        print(f"failed: {j.path}: {j.failure['error']}")
    for m in paths["missing"]:
        print(f"never ran: job {m.num} of {m.sweep}: {m.config}")
    print(f"wrote {paths['md']}, {paths['png']} and {paths['csv']}")
    return 0


def cli() -> None:
    """Console entry point (``python -m dqnfast.report``): exits with ``main``'s status."""
    sys.exit(main())
