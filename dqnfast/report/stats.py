"""The report's statistics: mean and Student-t CI over seeds, the IQM across games with a stratified-bootstrap CI.

``summarize`` makes one ``Row`` per game x config; ``aggregate`` one ``Aggregate`` per config run on
two or more games with reference scores (human-normalized, ``dqnfast.atari_scores``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

from dqnfast.atari_scores import REFERENCE_SCORES, human_normalized
from dqnfast.report.jobs import Job

__all__ = ["Aggregate", "Row", "aggregate", "iqm", "iqm_ci", "mean_ci", "summarize"]


# ----------------------------------------------------------------- statistics
def mean_ci(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, low, high) over seeds: sample std (ddof=1) and Student's t interval.

    One value: no std and no interval (NaN: a sample std of one value is undefined).
    """
    a = np.asarray([v for v in x if math.isfinite(v)], np.float64)
    if len(a) == 0:
        return (math.nan,) * 4
    m = float(a.mean())
    if len(a) == 1:
        return m, math.nan, math.nan, math.nan
    sd = float(a.std(ddof=1))
    if sd == 0.0:
        return m, 0.0, m, m
    lo, hi = stats.t.interval(confidence, len(a) - 1, loc=m, scale=sd / math.sqrt(len(a)))
    return m, sd, float(lo), float(hi)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def iqm_ci(
    per_game: Sequence[Sequence[float]], *, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(IQM, low, high) of scores pooled over games and runs, with a stratified-bootstrap CI.

    per_game: one sequence of run scores per game. The bootstrap resamples runs within
    each game (``scipy.stats.bootstrap`` with one sample per game, percentile method);
    the bounds are NaN when some game has a single run (nothing to resample).
    """
    samples = [np.asarray([v for v in g if math.isfinite(v)], np.float64) for g in per_game]
    samples = [s for s in samples if len(s)]
    if not samples:
        return math.nan, math.nan, math.nan
    point = float(iqm(np.concatenate(samples)))
    if min(len(s) for s in samples) < 2:
        return point, math.nan, math.nan

    def statistic(*s: np.ndarray, axis: int = -1) -> np.ndarray:
        return iqm(np.concatenate(s, axis=axis), axis=axis)

    kwargs = dict(n_resamples=reps, confidence_level=confidence, method="percentile", vectorized=True)
    try:
        res = stats.bootstrap(samples, statistic, rng=np.random.default_rng(seed), **kwargs)
    except TypeError:  # scipy < 1.15 names it random_state
        res = stats.bootstrap(samples, statistic, random_state=np.random.default_rng(seed), **kwargs)
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


# -------------------------------------------------------------------- summary
@dataclass
class Row:
    """One game x config: its seeds' final evaluation scores and their statistics."""

    game: str
    config: str
    jobs: list[Job]
    seeds: list[int | None] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    mean: float = math.nan
    std: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    hns: float = math.nan  # human-normalized mean (NaN: no reference scores)
    train_score: float = math.nan  # mean over seeds of the last training score
    env_steps: int = 0

    @property
    def n(self) -> int:
        return len(self.scores)


@dataclass
class Aggregate:
    """One config across games: human-normalized IQM (95% CI), mean and median."""

    config: str
    games: list[str]
    runs: int
    iqm: float
    ci_low: float
    ci_high: float
    mean: float
    median: float


def summarize(jobs: Sequence[Job]) -> list[Row]:
    """One Row per (game, config), in order of first appearance, configs sorted within a game."""
    groups: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for j in jobs:
        groups[(j.game, j.config)].append(j)
    game_order = list(dict.fromkeys(j.game for j in jobs))
    rows = []
    for (game, config), js in sorted(groups.items(), key=lambda kv: (game_order.index(kv[0][0]), kv[0][1])):
        done = [j for j in js if j.status == "done"]
        r = Row(game, config, js, seeds=[j.seed for j in done], scores=[j.score for j in done])
        r.mean, r.std, r.ci_low, r.ci_high = mean_ci(r.scores)
        if game in REFERENCE_SCORES and r.scores:
            r.hns = float(np.mean([human_normalized(game, s) for s in r.scores]))
        ts = [j.train_score for j in js if math.isfinite(j.train_score)]
        r.train_score = float(np.mean(ts)) if ts else math.nan
        r.env_steps = max((j.env_steps for j in js), default=0)
        rows.append(r)
    return rows


def aggregate(rows: Sequence[Row], *, reps: int = 2000, seed: int = 0) -> list[Aggregate]:
    """Across-game human-normalized statistics for each config run on >= 2 reference games."""
    by_config: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.game in REFERENCE_SCORES and r.scores:
            by_config[r.config].append(r)
    out = []
    for config, rs in by_config.items():
        if len(rs) < 2:
            continue
        per_game = [[human_normalized(r.game, s) for s in r.scores] for r in rs]
        point, lo, hi = iqm_ci(per_game, reps=reps, seed=seed)
        game_means = [float(np.mean(g)) for g in per_game]
        out.append(
            Aggregate(
                config,
                [r.game for r in rs],
                sum(len(g) for g in per_game),
                point,
                lo,
                hi,
                float(np.mean(game_means)),
                float(np.median(game_means)),
            )
        )
    return out
