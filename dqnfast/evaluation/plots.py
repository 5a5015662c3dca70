"""Headless plots of a run: evaluation scores (trained vs random) and the learning curve.

matplotlib's object API with the Agg canvas (``matplotlib.figure.Figure``): no pyplot,
no display, no global state, safe in any process. Each function writes one PNG and
returns its path.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dqnfast.atomic import atomic_open

__all__ = ["plot_eval_scores", "plot_learning_curve", "read_metrics"]

TRAINED_COLOR = "#1f77b4"
RANDOM_COLOR = "#ff7f0e"


def _figure(height: float, rows: int = 1):
    from matplotlib.figure import Figure  # a third of a second of imports: only when a plot is drawn

    fig = Figure(figsize=(7.0, height), dpi=100, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_open(path) as f:
        fig.savefig(f, format="png")
    return path


def _finite(xs: Sequence[float]) -> list[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def plot_eval_scores(
    trained: Sequence[float],
    random: Sequence[float] | None,
    path: str | os.PathLike,
    *,
    title: str = "",
    xlabel: str = "game score (unclipped)",
) -> Path:
    """Histogram of evaluation episode scores: trained agent vs uniform-random agent.

    trained, random: one score per episode (random may be None or empty). Both share
    the bins; dashed lines mark the means.
    """
    t, r = _finite(trained), _finite(random or [])
    fig, (ax,) = _figure(3.6)
    allx = t + r
    if allx:
        lo, hi = min(allx), max(allx)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        integer = all(float(x).is_integer() for x in allx) and hi - lo <= 60
        bins = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.5, 1.0) if integer else np.linspace(lo, hi, 31)
        for xs, color, name in ((r, RANDOM_COLOR, "random"), (t, TRAINED_COLOR, "trained")):
            if not xs:
                continue
            mean = float(np.mean(xs))
            ax.hist(
                xs,
                bins=bins,
                color=color,
                alpha=0.6,
                label=f"{name}: mean {mean:.1f} ± {float(np.std(xs)):.1f} ({len(xs)} games)",
            )
            ax.axvline(mean, color=color, linestyle="--", linewidth=1.5)
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no finished games", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("games")
    ax.set_title(title or "evaluation scores")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def read_metrics(path: str | os.PathLike) -> dict[str, list[float]]:
    """metrics.csv -> {column: [float, ...]} (empty cells -> NaN)."""
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    x = math.nan
                cols.setdefault(k, []).append(x)
    return cols


def plot_learning_curve(
    metrics_csv: str | os.PathLike,
    path: str | os.PathLike,
    *,
    title: str = "",
    frame_skip: int = 1,
    eval_mean: float | None = None,
    random_mean: float | None = None,
) -> Path:
    """Game score and TD loss against agent steps, from a run's metrics.csv.

    Top: mean (and median) score of the recent games at each row; optional dashed
    lines for the final evaluation mean and the random agent's mean. Bottom: the
    mean TD loss of the updates between rows (log scale when positive).
    """
    m = read_metrics(metrics_csv)
    x = m.get("env_steps", [])
    fig, (ax_s, ax_l) = _figure(5.2, rows=2)

    def series(name: str) -> tuple[list[float], list[float]]:
        ys = m.get(name, [])
        pts = [(a, b) for a, b in zip(x, ys) if math.isfinite(a) and math.isfinite(b)]
        return [a for a, _ in pts], [b for _, b in pts]

    sx, sy = series("score_mean")
    if sx:
        ax_s.plot(
            sx,
            sy,
            color=TRAINED_COLOR,
            marker="o" if len(sx) < 30 else None,
            markersize=3,
            label="mean score (recent training games)",
        )
    mx, my = series("score_median")
    if mx:
        ax_s.plot(mx, my, color=TRAINED_COLOR, alpha=0.35, linewidth=1, label="median")
    if eval_mean is not None and math.isfinite(eval_mean):
        ax_s.axhline(eval_mean, color="#2ca02c", linestyle="--", label=f"evaluation mean {eval_mean:.1f}")
    if random_mean is not None and math.isfinite(random_mean):
        ax_s.axhline(random_mean, color=RANDOM_COLOR, linestyle=":", label=f"random agent {random_mean:.1f}")
    ax_s.set_ylabel("game score")
    ax_s.grid(alpha=0.3)
    if ax_s.get_legend_handles_labels()[0]:
        ax_s.legend(loc="best", fontsize=8)
    ax_s.set_title(title or "learning curve")

    lx, ly = series("loss")
    if lx:
        ax_l.plot(lx, ly, color="#d62728", marker="o" if len(lx) < 30 else None, markersize=3)
        if all(v > 0 for v in ly):
            from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # as Figure above

            ax_l.set_yscale("log")
            ax_l.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax_l.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax_l.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax_l.text(0.5, 0.5, "no updates yet", ha="center", va="center", transform=ax_l.transAxes)
    ax_l.set_ylabel("TD loss")
    ax_l.set_xlabel("agent steps" + (f" (x{frame_skip} = frames)" if frame_skip > 1 else ""))
    ax_l.grid(alpha=0.3)
    return _save(fig, path)
