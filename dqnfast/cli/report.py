"""``python -m dqnfast.report DIR [DIR ...]``: the sweep report's command line (argparse)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from dqnfast import report


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
    try:
        paths = report.write_report(args.dirs, args.out, reps=args.reps, seed=args.seed)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in paths["rows"]:
        print(
            f"{r.game:<16} {r.config:<40} n={r.n:<3} {report._fmt(r.mean):>10} ± {report._fmt(r.std):<8} "
            f"CI {report._ci(r.ci_low, r.ci_high)}"
        )
    print(f"wrote {paths['md']}, {paths['png']} and {paths['csv']}")
    return 0
