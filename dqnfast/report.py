"""The results report of a sweep: ``python -m dqnfast.report multirun/DATE/TIME``.

Collects every training job of one or more Hydra multirun dirs (a folder holding
``.hydra/overrides.yaml`` whose ``.hydra/config.yaml`` is a training config: the basic,
joblib, submitit and Ray launchers and the Optuna sweeper all write one per job; an
evaluation's output folder, which Hydra writes the same way, is not a job) with its ``metrics.csv`` and ``eval.json`` (in the run dir
or its ``eval/``), and writes

* ``report.md``: one row per game x config: seeds, final evaluation score mean ± std and
  its 95% confidence interval over seeds, the human-normalized score (Atari games with
  reference scores, ``dqnfast.atari_scores``), the last training score; then, when a
  config ran on two or more such games, the interquartile mean (IQM) of human-normalized
  scores across games and seeds with a stratified-bootstrap 95% CI (Agarwal et al. 2021);
  the learning curves; every job and its status; the best Optuna trial if there is one.
* ``report.png``: learning curves (training score of the recent games against agent steps),
  one panel per game, the mean over seeds of each config with a ± std band.
* ``report.csv``: the game x config table, for other tools.

A *config* is the set of command-line overrides that differ between jobs, other than
``seed`` and ``game`` (from each job's ``.hydra/overrides.yaml``); ``default`` when all
jobs share them. The score of a job is its final greedy evaluation (``eval.json``'s
``mean``); jobs without one (still running, crashed) are listed but not scored.

Statistics come from scipy: the per-row CI is Student's t interval of the mean over seeds
(sound for the 3-10 seeds of a sweep, where a percentile bootstrap is too narrow); the
IQM's CI is ``scipy.stats.bootstrap`` with one sample per game, i.e. runs resampled
within each game (rliable's stratified bootstrap).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Sequence

import numpy as np

from dqnfast.atari_scores import REFERENCE_SCORES, human_normalized
from dqnfast.atomic import atomic_open

__all__ = [
    "Job",
    "Row",
    "Aggregate",
    "collect_jobs",
    "is_training_job",
    "config_labels",
    "summarize",
    "aggregate",
    "mean_ci",
    "iqm_ci",
    "write_report",
    "main",
]

DEFAULT_LABEL = "default"
IGNORED_KEYS = ("seed", "game")  # never part of a config label


# ----------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One run of a sweep.

    path: its run dir. overrides: its command-line overrides (``key=value`` strings).
    game: the short game name (``Pong``, ``CartPole``). seed: its seed. eval: eval.json's
    dict (None if missing). curve: float64[K, 2] (env_steps, score_mean) rows of
    metrics.csv with a score. config: its config label (set by ``collect_jobs``).
    """

    path: Path
    overrides: list[str]
    game: str
    seed: int | None
    eval: dict[str, Any] | None
    curve: np.ndarray
    env_steps: int = 0
    config: str = DEFAULT_LABEL

    @property
    def score(self) -> float:
        """The final evaluation's mean score (NaN without an eval.json)."""
        v = (self.eval or {}).get("mean", math.nan)
        return float(v) if isinstance(v, (int, float)) else math.nan

    @property
    def train_score(self) -> float:
        """The last training score (mean of the recent games) in metrics.csv."""
        return float(self.curve[-1, 1]) if len(self.curve) else math.nan

    @property
    def status(self) -> str:
        if self.eval is not None and math.isfinite(self.score):
            return "done"
        return "no eval.json" if self.eval is None else "no eval score"


def _short_game(name: Any) -> str:
    return str(name).split("-v")[0] if name is not None else "?"


def _parse_override(o: str) -> tuple[str, str] | None:
    o = str(o).strip()
    if not o or o.startswith("~") or "=" not in o:
        return None
    key, value = o.split("=", 1)
    return key.lstrip("+"), value


def _read_curve(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists():
        return np.zeros((0, 2)), 0
    pts, steps = [], 0
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                x = float(r["env_steps"])
                steps = max(steps, int(x))
                y = float(r.get("score_mean", "nan"))
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(y):
                pts.append((x, y))
    return np.asarray(pts, np.float64).reshape(-1, 2), steps


def _load_job(run_dir: Path) -> Job:
    import yaml

    overrides = [str(o) for o in (yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or [])]
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.exists() else {}
    ev = None
    for path in (run_dir / "eval.json", run_dir / "eval" / "eval.json"):
        if path.exists():
            try:
                ev = json.loads(path.read_text())
                break
            except json.JSONDecodeError:
                continue
    kv = dict(filter(None, map(_parse_override, overrides)))
    game = _short_game((ev or {}).get("game") or cfg.get("game") or kv.get("game"))
    seed = cfg.get("seed", kv.get("seed"))
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError):
        seed = None
    curve, steps = _read_curve(run_dir / "metrics.csv")
    if ev and isinstance(ev.get("env_steps"), int):
        steps = max(steps, ev["env_steps"])
    return Job(run_dir, overrides, game, seed, ev, curve, steps)


def config_labels(overrides: Sequence[Sequence[str]]) -> list[str]:
    """One label per job: its overrides that differ between jobs, other than seed and game.

    A key counts when some job lacks it or two jobs give it different values. Labels list
    ``key=value`` sorted by key; ``default`` when nothing differs.
    """
    parsed = [dict(filter(None, map(_parse_override, o))) for o in overrides]
    keys = sorted({k for p in parsed for k in p if k not in IGNORED_KEYS})
    varying = [k for k in keys if len({p.get(k) for p in parsed}) > 1]
    return [" ".join(f"{k}={p[k]}" for k in varying if k in p) or DEFAULT_LABEL for p in parsed]


def is_training_job(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a training job: Hydra's files with a training config.

    ``python -m dqnfast.evaluate`` writes the same ``.hydra/`` into its output folder
    (often inside a job's folder); its config names the ``run`` it evaluated, which a
    training config never has. A job whose config.yaml is missing or unreadable still
    counts (listed as unfinished), so a crashed job is never hidden.
    """
    import yaml

    hydra_dir = Path(run_dir) / ".hydra"
    if not (hydra_dir / "overrides.yaml").exists():
        return False
    try:
        cfg = yaml.safe_load((hydra_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return True
    return not (isinstance(cfg, dict) and "run" in cfg)


def collect_jobs(dirs: Iterable[str | Path]) -> list[Job]:
    """Every training job under ``dirs`` (``is_training_job``), labelled by config."""
    runs: list[Path] = []
    for d in map(Path, dirs):
        runs += [d] if is_training_job(d) else []
        runs += sorted(p.parent.parent for p in d.rglob(".hydra/overrides.yaml") if p.parent.parent != d)
    runs = [p for p in runs if is_training_job(p)]
    runs = sorted(set(runs), key=lambda p: (str(p.parent), _natural(p.name)))
    jobs = [_load_job(p) for p in runs]
    for job, label in zip(jobs, config_labels([j.overrides for j in jobs])):
        job.config = label
    return jobs


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


# ----------------------------------------------------------------- statistics
def mean_ci(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, low, high) over seeds: sample std (ddof=1) and Student's t interval.

    One value: std 0 and no interval (NaN bounds).
    """
    from scipy import stats

    a = np.asarray([v for v in x if math.isfinite(v)], np.float64)
    if len(a) == 0:
        return (math.nan,) * 4
    m = float(a.mean())
    if len(a) == 1:
        return m, 0.0, math.nan, math.nan
    sd = float(a.std(ddof=1))
    if sd == 0.0:
        return m, 0.0, m, m
    lo, hi = stats.t.interval(confidence, len(a) - 1, loc=m, scale=sd / math.sqrt(len(a)))
    return m, sd, float(lo), float(hi)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean)."""
    from scipy import stats

    return stats.trim_mean(x, 0.25, axis=axis)


def iqm_ci(
    per_game: Sequence[Sequence[float]], *, confidence: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """(IQM, low, high) of scores pooled over games and runs, with a stratified-bootstrap CI.

    per_game: one sequence of run scores per game. The bootstrap resamples runs within
    each game (``scipy.stats.bootstrap`` with one sample per game, percentile method);
    the bounds are NaN when some game has a single run (nothing to resample).
    """
    from scipy import stats

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


# ------------------------------------------------------------------- outputs
def _fmt(x: float, digits: int = 2) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{x:,.{digits}f}" if abs(x) < 1e5 else f"{x:.3g}"


def _ci(lo: float, hi: float, digits: int = 2) -> str:
    return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if math.isfinite(lo) and math.isfinite(hi) else "–"


def _md_cell(s: str) -> str:
    return f"`{s}`" if s and s != DEFAULT_LABEL else (s or DEFAULT_LABEL)


def plot_curves(rows: Sequence[Row], path: Path | IO[bytes]) -> Path | IO[bytes]:
    """report.png: per game, each config's mean training score over seeds ± std against agent steps.

    path: a file path or a binary file object (the atomic writer's); returned as given.
    """
    from matplotlib.figure import Figure  # the object API on the Agg canvas: no pyplot, no display

    games = list(dict.fromkeys(r.game for r in rows)) or ["(no jobs)"]
    cols = min(3, len(games))
    nrows = math.ceil(len(games) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * nrows), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, game in zip(axes.flat, games):
        for r in (r for r in rows if r.game == game):
            curves = [j.curve for j in r.jobs if len(j.curve) >= 1]
            if not curves:
                continue
            lo = max(c[0, 0] for c in curves)
            hi = min(c[-1, 0] for c in curves)
            grid = np.unique(np.concatenate([c[:, 0] for c in curves]))
            grid = grid[(grid >= lo) & (grid <= hi)] if hi >= lo else grid[:0]
            if len(grid) == 0:
                continue
            ys = np.stack([np.interp(grid, c[:, 0], c[:, 1]) for c in curves])
            m, sd = ys.mean(0), ys.std(0)
            label = f"{r.config} (n={len(curves)})"
            (line,) = ax.plot(grid, m, label=label, marker="o" if len(grid) == 1 else None)
            if len(curves) > 1:
                ax.fill_between(grid, m - sd, m + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(game)
        ax.set_xlabel("agent steps")
        ax.set_ylabel("training score (recent games)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(games) :]:
        ax.set_visible(False)
    fig.suptitle("learning curves: mean over seeds ± std")
    fig.savefig(path, format="png")
    return path


def _optuna_section(dirs: Sequence[Path]) -> list[str]:
    import yaml

    out = []
    for d in dirs:
        p = d / "optimization_results.yaml"
        if p.exists():
            res = yaml.safe_load(p.read_text()) or {}
            out += ["", f"## Optuna: best trial ({p})", ""]
            if "best_value" in res:
                out.append(f"best value (final evaluation mean): **{_fmt(float(res['best_value']))}**")
            for k, v in (res.get("best_params") or {}).items():
                out.append(f"- `{k}={v}`")
    return out


CSV_COLUMNS = (
    "game",
    "config",
    "seeds",
    "n",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "human_normalized",
    "train_score",
    "env_steps",
)


def write_report(
    dirs: Sequence[str | Path], out_dir: str | Path | None = None, *, reps: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Collects the jobs under ``dirs`` and writes report.md, report.png and report.csv to ``out_dir``.

    out_dir: default the first dir. Returns {"md", "png", "csv"}: the paths, and
    {"rows", "aggregates"}: the tables. Raises FileNotFoundError if no job is found.
    report.md reads top to bottom as the section functions are called here; every file is
    written atomically, so a reader never sees half a report.
    """
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such directory")
    jobs = collect_jobs(dirs)
    if not jobs:
        raise FileNotFoundError(f"no Hydra jobs (.hydra/overrides.yaml) under {', '.join(map(str, dirs))}")
    out = Path(out_dir) if out_dir is not None else dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(jobs)
    aggs = aggregate(rows, reps=reps, seed=seed)
    png = out / "report.png"
    with atomic_open(png, "wb") as f:
        plot_curves(rows, f)
    with atomic_open(out / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(
                [r.game, r.config, " ".join(str(s) for s in r.seeds), r.n, r.mean, r.std]
                + [r.ci_low, r.ci_high, r.hns, r.train_score, r.env_steps]
            )
    md = (
        _md_header(dirs, jobs, rows)
        + _md_scores(rows)
        + _md_aggregates(aggs, reps)
        + ["", "## Learning curves", "", f"![learning curves]({png.name})"]
        + _md_jobs(jobs, out)
        + _optuna_section(dirs)
    )
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(md) + "\n")
    return {"md": out / "report.md", "png": png, "csv": out / "report.csv", "rows": rows, "aggregates": aggs}


def _md_header(dirs: Sequence[Path], jobs: Sequence[Job], rows: Sequence[Row]) -> list[str]:
    done = sum(j.status == "done" for j in jobs)
    games = list(dict.fromkeys(r.game for r in rows))
    configs = list(dict.fromkeys(r.config for r in rows))
    eval_games = sorted({len(j.eval.get("scores", [])) for j in jobs if j.eval and j.eval.get("scores")})
    return [
        "# dqnfast report",
        "",
        f"Sweep: {', '.join(f'`{d}`' for d in dirs)}: {len(jobs)} jobs ({done} with a final evaluation), "
        f"{len(games)} game(s), {len(configs)} config(s).",
        "",
        "Score: the final greedy evaluation of each run (`eval.json` mean"
        + (f" over {'/'.join(map(str, eval_games))} games" if eval_games else "")
        + "); mean ± std (sample) and Student-t 95% CI over seeds. Human-normalized: (score − random) / "
        "(human − random) with the Atari-57 reference scores. Train score: the last `score_mean` of "
        "`metrics.csv`. Config: the overrides that differ between jobs, other than `seed` and `game`.",
    ]


def _md_scores(rows: Sequence[Row]) -> list[str]:
    md = [
        "",
        "## Scores",
        "",
        "| game | config | seeds | score (mean ± std) | 95% CI | human-normalized | train score | agent steps |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        seeds = ", ".join(str(s) for s in r.seeds) or "–"
        missing = len(r.jobs) - r.n
        seeds += f" (+{missing} unfinished)" if missing else ""
        md.append(
            f"| {r.game} | {_md_cell(r.config)} | {seeds} | {_fmt(r.mean)} ± {_fmt(r.std)} | "
            f"{_ci(r.ci_low, r.ci_high)} | {_fmt(r.hns, 3)} | {_fmt(r.train_score)} | {r.env_steps:,} |"
        )
    return md


def _md_aggregates(aggs: Sequence[Aggregate], reps: int) -> list[str]:
    if not aggs:
        return []
    md = [
        "",
        "## Across games (human-normalized)",
        "",
        "IQM: interquartile mean over all runs of all games, 95% CI from a stratified bootstrap "
        "(runs resampled within each game, percentile method, "
        f"{reps} resamples). Mean and median: over the games' mean scores.",
        "",
        "| config | games | runs | IQM | 95% CI | mean | median |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in aggs:
        md.append(
            f"| {_md_cell(a.config)} | {', '.join(a.games)} | {a.runs} | {_fmt(a.iqm, 3)} | "
            f"{_ci(a.ci_low, a.ci_high, 3)} | {_fmt(a.mean, 3)} | {_fmt(a.median, 3)} |"
        )
    return md


def _md_jobs(jobs: Sequence[Job], out: Path) -> list[str]:
    md = [
        "",
        "## Jobs",
        "",
        "| job | game | config | seed | score | train score | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j in jobs:
        try:
            rel = j.path.relative_to(out)
        except ValueError:
            rel = j.path
        md.append(
            f"| `{rel}` | {j.game} | {_md_cell(j.config)} | {j.seed} | {_fmt(j.score)} | "
            f"{_fmt(j.train_score)} | {j.status} |"
        )
    return md


if __name__ == "__main__":
    from dqnfast.cli.report import main

    sys.exit(main())
