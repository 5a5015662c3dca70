"""``python -m dqnfast.tabular``: Q-value iteration and Q-learning on the textbook three-state MDP.

Prints both Q tables and their greedy policies, and on request writes a PNG of the Q-values'
convergence (``--plot``) and a JSON summary (``--json``). Bad arguments are one line on
stderr and exit status 2; a file that cannot be written is one line and exit status 1.

    python -m dqnfast.tabular                       # gamma 0.90
    python -m dqnfast.tabular --gamma 0.95 --plot q.png --json q.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from dqnfast.agent import tabular
from dqnfast.atomic import atomic_open, atomic_path

PROG = "python -m dqnfast.tabular"
# Points kept of Q-learning's trajectory for the plot (on a log axis the first one, at
# steps / PLOT_POINTS, is where the curves start): a few MB at most.
PLOT_POINTS = 5000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; one line is asked for
        _fail(message)


def _fail(message: str, status: int = 2):
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--gamma", type=float, default=0.9, help="discount factor in [0, 1) (default 0.9)")
    p.add_argument(
        "--iterations",
        type=int,
        default=1000,
        help="most sweeps of Q-value iteration, 1 to 2^63 - 1; it stops earlier at a fixed point (default 1000)",
    )
    p.add_argument(
        "--q-learning-steps",
        type=int,
        default=1_000_000,
        help="random-exploration steps of Q-learning, 0 to 2^63 - 1; 0 skips it (default 1,000,000)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of Q-learning's exploration (default 0)")
    p.add_argument("--plot", type=Path, default=None, metavar="PATH", help="write the convergence plot (PNG)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results as JSON")
    args = p.parse_args(argv)
    if not (math.isfinite(args.gamma) and 0.0 <= args.gamma < 1.0):
        _fail(f"--gamma must be in [0, 1), got {args.gamma}")
    top = tabular.INT64_MAX  # the compiled kernels count in int64
    if not 1 <= args.iterations <= top:
        _fail(f"--iterations must be in [1, {top}], got {args.iterations}")
    if not 0 <= args.q_learning_steps <= top:
        _fail(f"--q-learning-steps must be in [0, {top}], got {args.q_learning_steps}")
    if not 0 <= args.seed < 2**32:
        _fail(f"--seed must be in [0, 2**32), got {args.seed}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mdp = tabular.three_state_mdp()
    gamma = args.gamma

    # the sweep-by-sweep history only feeds the plot: a long run without --plot keeps none
    vi = tabular.q_value_iteration(mdp, gamma, args.iterations, history=args.plot is not None)
    vi_policy = tabular.greedy_policy(vi.q)
    residual = tabular.bellman_residual(mdp, vi.q, gamma)
    print(f"Three-state MDP (textbook example), gamma = {gamma:g}")
    print()
    print(
        f"Q-value iteration: {vi.sweeps} sweeps (at most {args.iterations}), "
        f"last change {vi.delta:.3g}, Bellman residual {residual:.3g}"
    )
    print(format_q(vi.q, vi_policy))
    summary = {
        "mdp": "three-state textbook example",
        "gamma": gamma,
        "possible_actions": [list(a) for a in mdp.possible_actions],
        "q_value_iteration": {
            "max_sweeps": args.iterations,
            "sweeps": vi.sweeps,
            "last_change": vi.delta,
            "bellman_residual": residual,
            "q": _jsonable(vi.q),
            "policy": vi_policy.tolist(),
        },
    }

    ql = None
    if args.q_learning_steps > 0:
        every = max(1, args.q_learning_steps // PLOT_POINTS)
        ql = tabular.q_learning(mdp, gamma, args.q_learning_steps, seed=args.seed, record_every=every)
        ql_policy = tabular.greedy_policy(ql.q)
        allowed = mdp.allowed
        gap = float(np.max(np.abs(ql.q[allowed] - vi.q[allowed])))
        agree = bool(np.array_equal(ql_policy, vi_policy))
        print()
        print(
            f"Q-learning: {args.q_learning_steps:,} steps of random exploration, "
            f"alpha = {tabular.DEFAULT_ALPHA0:g} / (1 + {tabular.DEFAULT_DECAY:g} t), seed {args.seed}"
        )
        print(format_q(ql.q, ql_policy))
        print(f"largest |Q-learning - Q-value iteration| = {gap:.3g}; greedy policies {'agree' if agree else 'DIFFER'}")
        summary["q_learning"] = {
            "steps": args.q_learning_steps,
            "alpha0": tabular.DEFAULT_ALPHA0,
            "decay": tabular.DEFAULT_DECAY,
            "seed": args.seed,
            "q": _jsonable(ql.q),
            "policy": ql_policy.tolist(),
            "max_abs_diff_to_value_iteration": gap,
            "policy_matches_value_iteration": agree,
        }
    print()
    print(f"greedy policy (action per state): {vi_policy.tolist()}")

    try:
        if args.plot is not None:
            plot_convergence(args.plot, vi, ql, mdp.allowed, gamma)
            print(f"plot: {args.plot}")
        if args.json is not None:
            _write_atomic(args.json, json.dumps(summary, indent=2) + "\n")
            print(f"json: {args.json}")
    except OSError as e:
        _fail(f"cannot write {e.filename or ''}: {e.strerror or e}", status=1)
    return 0


def format_q(q: np.ndarray, policy: np.ndarray) -> str:
    """A Q table as text: one row per state, '-' for disallowed actions, the greedy action last."""
    S, A = q.shape
    head = ["state", *(f"a{a}" for a in range(A)), "greedy"]
    rows = [
        [str(s), *(f"{q[s, a]:.6f}" if math.isfinite(q[s, a]) else "-" for a in range(A)), f"a{policy[s]}"]
        for s in range(S)
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join("  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows])


def plot_convergence(
    path: str | os.PathLike,
    vi: tabular.ValueIterationResult,
    ql: tabular.QLearningResult | None,
    allowed: np.ndarray,
    gamma: float,
) -> Path:
    """PNG of every allowed Q(s, a) against Q-value iteration's sweeps and, when given,
    Q-learning's steps (log scale); dashed lines at value iteration's final values."""
    from matplotlib.figure import Figure  # the Agg canvas: no pyplot, no display

    panels = 2 if ql is not None else 1
    fig = Figure(figsize=(5.0 * panels + 1.2, 4.0), dpi=100, layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    pairs = [(s, a) for s, a in zip(*np.nonzero(allowed))]
    colors = [f"C{i % 10}" for i in range(len(pairs))]
    curves = [(axes[0], np.arange(vi.history.shape[0]), vi.history, "Q-value iteration", "sweep")]
    if ql is not None:
        later = ql.steps > 0  # a log axis: exploration's early swings and the slow tail both show
        curves.append(
            (axes[1], ql.steps[later], ql.history[later], "Q-learning (random exploration)", "step (log scale)")
        )
        axes[1].set_xscale("log")
    for ax, x, hist, title, xlabel in curves:
        for (s, a), color in zip(pairs, colors):
            ax.plot(x, hist[:, s, a], color=color, lw=1.5, label=f"Q(s{s}, a{a})")
            ax.axhline(vi.q[s, a], color=color, lw=0.8, ls="--")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Q-value")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize="small")
    fig.suptitle(f"Three-state MDP, gamma = {gamma:g} (dashed: value iteration's result)")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _jsonable(q: np.ndarray) -> list:
    """Q as nested lists, disallowed actions (-inf) as null: JSON has no infinity."""
    return [[float(v) if math.isfinite(v) else None for v in row] for row in q]


def _write_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def cli() -> None:
    """Console entry point (``python -m dqnfast.tabular``): exits with ``main``'s status."""
    sys.exit(main())
