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
  the learning curves; every job and its status (failed jobs with their one-line error,
  jobs of the sweep that never ran); the best Optuna trial if there is one.
* ``report.png``: learning curves (training score of the recent games against agent steps),
  one panel per game, the mean over seeds of each config with a ± std band.
* ``report.csv``: the game x config table, for other tools.

A *config* is the set of command-line overrides that differ between jobs, other than
``seed`` and ``game`` (from each job's ``.hydra/overrides.yaml``); ``default`` when all
jobs share them. The score of a job is its final greedy evaluation (``eval.json``'s
``mean``); jobs without one (still running, failed: ``failed.json``) are listed but not
scored. A job whose files cannot be read (not text, not the JSON or YAML they should be)
is named and skipped, never the end of the report. Every value read from a job's files is
escaped for Markdown where report.md shows it.

Statistics come from scipy: the per-row CI is Student's t interval of the mean over seeds
(sound for the 3-10 seeds of a sweep, where a percentile bootstrap is too narrow); the
IQM's CI is ``scipy.stats.bootstrap`` with one sample per game, i.e. runs resampled
within each game (rliable's stratified bootstrap).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Sequence

import numpy as np

from dqnfast.atari_scores import REFERENCE_SCORES, human_normalized
from dqnfast.atomic import atomic_open
from dqnfast.failure import read_failure

__all__ = [
    "Job",
    "JobError",
    "Missing",
    "Skipped",
    "Row",
    "Aggregate",
    "collect_jobs",
    "scan_jobs",
    "is_training_job",
    "config_labels",
    "summarize",
    "aggregate",
    "missing_jobs",
    "mean_ci",
    "iqm_ci",
    "write_report",
    "md_text",
    "md_code",
    "score_text",
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
    failure: its standing ``failed.json`` (``{"error", "exit_code"}``), None if it did not
    fail. notes: what was off in its files but did not stop it being read (a cut last line).
    """

    path: Path
    overrides: list[str]
    game: str
    seed: int | None
    eval: dict[str, Any] | None
    curve: np.ndarray
    env_steps: int = 0
    config: str = DEFAULT_LABEL
    failure: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

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
        """``done``, ``failed``, ``no eval.json`` (running, or stopped) or ``no eval score``."""
        if self.failure is not None:
            return "failed"
        if self.eval is not None and math.isfinite(self.score):
            return "done"
        return "no eval.json" if self.eval is None else "no eval score"


class JobError(ValueError):
    """A job's file cannot be read as what it should be; ``str()`` names the file and why, in one line."""


@dataclass
class Skipped:
    """A job left out of the report: its run dir and why (``JobError``'s line)."""

    path: Path
    reason: str


@dataclass
class Missing:
    """A job of a sweep's plan that never ran: the sweep dir, its number in the plan, its overrides.

    config: its config label among the jobs that ran (set by ``write_report``).
    """

    sweep: Path
    num: int
    overrides: list[str]
    config: str = DEFAULT_LABEL


def _short_game(name: Any) -> str:
    return str(name).split("-v")[0] if name is not None else "?"


def _parse_override(o: str) -> tuple[str, str] | None:
    o = str(o).strip()
    if not o or o.startswith("~") or "=" not in o:
        return None
    key, value = o.split("=", 1)
    return key.lstrip("+"), value


def _read_text(path: Path, run_dir: Path) -> str:
    """The UTF-8 text of a job's file; raises JobError naming it (relative to the run dir)."""
    name = path.relative_to(run_dir).as_posix()
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise JobError(f"{name} is not UTF-8 text") from None
    except OSError as e:
        raise JobError(f"{name} cannot be read ({e.strerror or type(e).__name__})") from None


def _read_yaml(path: Path, run_dir: Path, kind: type) -> Any:
    """A job's YAML file, which must hold a ``kind`` (or nothing: ``kind()``); raises JobError."""
    import yaml

    name = path.relative_to(run_dir).as_posix()
    try:
        value = yaml.safe_load(_read_text(path, run_dir))
    except yaml.YAMLError as e:
        raise JobError(f"{name} is not valid YAML ({type(e).__name__})") from None
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise JobError(f"{name} holds a {type(value).__name__}, not a {kind.__name__}")
    return value


def _read_curve(path: Path, run_dir: Path) -> tuple[np.ndarray, int, list[str]]:
    """(float64[K, 2] of (env_steps, score_mean), the last env_steps, notes) of a metrics.csv.

    A last line without its line end (the run was killed while writing it) is left out
    and noted: its numbers may be cut short. Raises JobError for a file that is not CSV text.
    """
    if not path.exists():
        return np.zeros((0, 2)), 0, []
    text = _read_text(path, run_dir)
    notes = []
    if text and not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
        notes.append("metrics.csv's last line is cut (left out)")
    pts, steps = [], 0
    try:
        for r in csv.DictReader(io.StringIO(text, newline="")):
            try:
                x = float(r["env_steps"])
                y = float(r.get("score_mean", "nan"))
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(x):
                steps = max(steps, int(x))
            if math.isfinite(x) and math.isfinite(y):
                pts.append((x, y))
    except csv.Error as e:
        raise JobError(f"metrics.csv is not CSV ({' '.join(str(e).split())})") from None
    return np.asarray(pts, np.float64).reshape(-1, 2), steps, notes


def _read_eval(run_dir: Path) -> dict[str, Any] | None:
    """The job's eval.json (the run dir's, else its ``eval/``), None if there is none; raises JobError."""
    for path in (run_dir / "eval.json", run_dir / "eval" / "eval.json"):
        if not path.exists():
            continue
        name = path.relative_to(run_dir).as_posix()
        try:
            ev = json.loads(_read_text(path, run_dir))
        except json.JSONDecodeError:
            raise JobError(f"{name} is not JSON") from None
        if not isinstance(ev, dict):
            raise JobError(f"{name} holds a JSON {type(ev).__name__}, not an object")
        return ev
    return None


def _load_job(run_dir: Path) -> Job:
    """A job's files as a Job; raises JobError (one line naming the file) for one that cannot be read."""
    overrides = [str(o) for o in _read_yaml(run_dir / ".hydra" / "overrides.yaml", run_dir, list)]
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = _read_yaml(cfg_path, run_dir, dict) if cfg_path.exists() else {}
    ev = _read_eval(run_dir)
    kv = dict(filter(None, map(_parse_override, overrides)))
    game = _short_game((ev or {}).get("game") or cfg.get("game") or kv.get("game"))
    seed = cfg.get("seed", kv.get("seed"))
    try:
        seed = int(seed) if seed is not None else None
    except (TypeError, ValueError, OverflowError):
        seed = None
    curve, steps, notes = _read_curve(run_dir / "metrics.csv", run_dir)
    if ev and isinstance(ev.get("env_steps"), int):
        steps = max(steps, ev["env_steps"])
    return Job(run_dir, overrides, game, seed, ev, curve, steps, failure=read_failure(run_dir), notes=notes)


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
        cfg = yaml.safe_load((hydra_dir / "config.yaml").read_bytes().decode("utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8 text
        return True
    return not (isinstance(cfg, dict) and "run" in cfg)


def scan_jobs(dirs: Iterable[str | Path]) -> tuple[list[Job], list[Skipped]]:
    """Every training job under ``dirs`` (``is_training_job``), labelled by config, and those skipped.

    A job whose files cannot be read (``JobError``) is skipped, with its reason, so one bad
    folder never stops the others being reported.
    """
    runs: list[Path] = []
    for d in map(Path, dirs):
        runs += [d] if is_training_job(d) else []
        runs += sorted(p.parent.parent for p in d.rglob(".hydra/overrides.yaml") if p.parent.parent != d)
    runs = [p for p in runs if is_training_job(p)]
    runs = sorted(set(runs), key=lambda p: (str(p.parent), _natural(p.name)))
    jobs, skipped = [], []
    for p in runs:
        try:
            jobs.append(_load_job(p))
        except JobError as e:
            skipped.append(Skipped(p, str(e)))
    for job, label in zip(jobs, config_labels([j.overrides for j in jobs])):
        job.config = label
    return jobs, skipped


def collect_jobs(dirs: Iterable[str | Path]) -> list[Job]:
    """Every readable training job under ``dirs``, labelled by config (``scan_jobs`` without the skipped)."""
    return scan_jobs(dirs)[0]


def missing_jobs(
    planned: Mapping[Path, Sequence[Sequence[str]]], jobs: Sequence[Job], skipped: Sequence[Skipped]
) -> list[Missing]:
    """The jobs of each sweep's plan (sweep dir -> each job's overrides, in order) that left no folder.

    A planned job ran when a job under its sweep dir has the same overrides, or when its
    numbered folder (Hydra's ``<sweep>/<num>``) holds a skipped job, whose overrides could
    not be read.
    """
    out = []
    unread = {s.path for s in skipped}
    for sweep, plan in planned.items():
        sweep = Path(sweep)
        ran = [sorted(j.overrides) for j in jobs if sweep == j.path or sweep in j.path.parents]
        for num, overrides in enumerate(plan):
            if sorted(overrides) in ran:
                ran.remove(sorted(overrides))
            elif sweep / str(num) not in unread:
                out.append(Missing(sweep, num, list(overrides)))
    return out


def _natural(name: str) -> tuple:
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


# ----------------------------------------------------------------- statistics
def mean_ci(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, std, low, high) over seeds: sample std (ddof=1) and Student's t interval.

    One value: no std and no interval (NaN: a sample std of one value is undefined).
    """
    from scipy import stats

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


def score_text(r: Row) -> str:
    """``mean ± std`` of a row; ``mean (n=1)`` for one seed, whose sample std is undefined; ``–`` for none."""
    if r.n == 0:
        return "–"
    if r.n == 1:
        return f"{_fmt(r.mean)} (n=1)"
    return f"{_fmt(r.mean)} ± {_fmt(r.std)}"


# Markdown: every value read from a job's files (games, overrides, paths, errors) goes through these two.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md_text(value: Any) -> str:
    """``value`` as literal text in a Markdown table cell: one line, HTML and Markdown syntax escaped.

    ``<``, ``>`` and ``&`` become entities (no raw HTML reaches a renderer such as MkDocs'
    Python-Markdown); backslash, backtick, ``*``, ``_``, brackets and ``|`` (a cell's edge)
    are backslash-escaped.
    """
    text = html.escape(" ".join(str(value).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """``value`` as a Markdown code span in a table cell (``md_text`` when it holds a ``|``).

    The span's fence is one backtick longer than the longest run of backticks in the value,
    padded with spaces when the value starts or ends with one, so no value closes it early.
    A ``|`` would end a table cell inside a code span for some renderers (GitHub) and not
    for others (Python-Markdown), and its escape reads differently in each: such a value
    is written as escaped text instead.
    """
    text = " ".join(str(value).split())
    if not text or "|" in text:
        return md_text(text)
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[0] == "`" or text[-1] == "`" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_config(label: str) -> str:
    return md_code(label) if label and label != DEFAULT_LABEL else DEFAULT_LABEL


LEGEND_MAX = 10  # configs named in one panel's legend: more make it taller than the panel
LABEL_MAX = 60  # characters of a config label in the legend (report.md has the whole label)


def _legend(ax: Any, lines: Sequence[tuple[Any, str, float]]) -> None:
    """A readable legend for one panel: at most ``LEGEND_MAX`` configs, those with the best last score.

    lines: (line artist, label, last mean training score). Long labels are cut; a last
    entry says how many configs the legend leaves out (report.md's tables list them all).
    """
    from matplotlib.lines import Line2D

    if not lines:
        return
    shown = sorted(lines, key=lambda t: -t[2] if math.isfinite(t[2]) else math.inf)[:LEGEND_MAX]
    shown = [t for t in lines if any(t is u for u in shown)]  # in the table's order
    handles = [t[0] for t in shown]
    labels = [t[1] if len(t[1]) <= LABEL_MAX else t[1][: LABEL_MAX - 1] + "…" for t in shown]
    if len(lines) > len(shown):
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(f"+{len(lines) - len(shown)} more configs (best {len(shown)} shown; report.md has all)")
    ax.legend(handles, labels, fontsize="x-small" if len(lines) > 3 else "small")


def curves_figure(rows: Sequence[Row]) -> Any:
    """The learning-curves figure (a matplotlib ``Figure`` on the Agg canvas; ``plot_curves`` saves it)."""
    from matplotlib.figure import Figure  # the object API on the Agg canvas: no pyplot, no display

    games = list(dict.fromkeys(r.game for r in rows)) or ["(no jobs)"]
    cols = min(3, len(games))
    nrows = math.ceil(len(games) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * nrows), dpi=110, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, game in zip(axes.flat, games):
        lines = []
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
            (line,) = ax.plot(grid, m, marker="o" if len(grid) == 1 else None)
            lines.append((line, f"{r.config} (n={len(curves)})", float(m[-1])))
            if len(curves) > 1:
                ax.fill_between(grid, m - sd, m + sd, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_title(game)
        ax.set_xlabel("agent steps")
        ax.set_ylabel("training score (recent games)")
        ax.grid(alpha=0.3)
        _legend(ax, lines)
    for ax in list(axes.flat)[len(games) :]:
        ax.set_visible(False)
    fig.suptitle("learning curves: mean over seeds ± std")
    return fig


def plot_curves(rows: Sequence[Row], path: Path | IO[bytes]) -> Path | IO[bytes]:
    """report.png: per game, each config's mean training score over seeds ± std against agent steps.

    path: a file path or a binary file object (the atomic writer's); returned as given.
    """
    curves_figure(rows).savefig(path, format="png")
    return path


def _optuna_section(dirs: Sequence[Path]) -> list[str]:

    out = []
    for d in dirs:
        p = d / "optimization_results.yaml"
        if not p.exists():
            continue
        try:
            res = _read_yaml(p, d, dict)
        except JobError as e:
            out += ["", f"## Optuna: best trial ({md_text(p)})", "", f"Not shown: {md_text(e)}."]
            continue
        out += ["", f"## Optuna: best trial ({md_text(p)})", ""]
        best = res.get("best_value")
        if isinstance(best, (int, float)):
            out.append(f"best value (final evaluation mean): **{_fmt(float(best))}**")
        params = res.get("best_params")
        for k, v in (params if isinstance(params, dict) else {}).items():
            out.append(f"- {md_code(f'{k}={v}')}")
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
    dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    reps: int = 2000,
    seed: int = 0,
    planned: Mapping[Path, Sequence[Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """Collects the jobs under ``dirs`` and writes report.md, report.png and report.csv to ``out_dir``.

    out_dir: default the first dir. planned: sweep dir -> the overrides of each job its
    sweep launches (``dqnfast.cli.report`` reads them from Hydra's ``multirun.yaml``), so
    jobs that never ran are listed as missing. Returns {"md", "png", "csv"}: the paths,
    {"rows", "aggregates"}: the tables, {"skipped", "missing", "failed"}: the jobs left out
    (``Skipped``), never run (``Missing``) and failed (``Job``). Raises FileNotFoundError if
    no job is found. report.md reads top to bottom as the section functions are called
    here; every file is written atomically, so a reader never sees half a report.
    """
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such directory")
    jobs, skipped = scan_jobs(dirs)
    if not jobs and not skipped:
        raise FileNotFoundError(f"no Hydra jobs (.hydra/overrides.yaml) under {', '.join(map(str, dirs))}")
    missing = missing_jobs({Path(k): v for k, v in (planned or {}).items()}, jobs, skipped)
    labels = config_labels([j.overrides for j in jobs] + [m.overrides for m in missing])
    for m, label in zip(missing, labels[len(jobs) :]):
        m.config = label
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
        _md_header(dirs, jobs, rows, skipped, missing)
        + _md_scores(rows)
        + _md_aggregates(aggs, reps)
        + ["", "## Learning curves", "", f"![learning curves]({png.name})"]
        + _md_jobs(jobs, out, missing)
        + _md_skipped(skipped, out)
        + _optuna_section(dirs)
    )
    with atomic_open(out / "report.md", "w") as f:
        f.write("\n".join(md) + "\n")
    return {
        "md": out / "report.md",
        "png": png,
        "csv": out / "report.csv",
        "rows": rows,
        "aggregates": aggs,
        "skipped": skipped,
        "missing": missing,
        "failed": [j for j in jobs if j.status == "failed"],
    }


def _md_header(
    dirs: Sequence[Path],
    jobs: Sequence[Job],
    rows: Sequence[Row],
    skipped: Sequence[Skipped],
    missing: Sequence[Missing],
) -> list[str]:
    done = sum(j.status == "done" for j in jobs)
    failed = sum(j.status == "failed" for j in jobs)
    games = list(dict.fromkeys(r.game for r in rows))
    configs = list(dict.fromkeys(r.config for r in rows))
    eval_games = sorted({len(s) for j in jobs if j.eval and isinstance(s := j.eval.get("scores"), list) and s})
    counts = [f"{done} with a final evaluation"]
    counts += [f"{failed} failed"] if failed else []
    counts += [f"{len(skipped)} skipped: unreadable files"] if skipped else []
    counts += [f"{len(missing)} never ran"] if missing else []
    return [
        "# dqnfast report",
        "",
        f"Sweep: {', '.join(md_code(d) for d in dirs)}: {len(jobs) + len(skipped) + len(missing)} jobs "
        f"({', '.join(counts)}), {len(games)} game(s), {len(configs)} config(s).",
        "",
        "Score: the final greedy evaluation of each run (`eval.json` mean"
        + (f" over {'/'.join(map(str, eval_games))} games" if eval_games else "")
        + "); mean ± std (sample) and Student-t 95% CI over seeds (one seed: n=1, no std or CI). "
        "Human-normalized: (score − random) / "
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
        seeds = ", ".join(md_text(s) for s in r.seeds) or "–"
        failed = sum(j.status == "failed" for j in r.jobs)
        unfinished = len(r.jobs) - r.n - failed
        seeds += f" (+{failed} failed)" if failed else ""
        seeds += f" (+{unfinished} unfinished)" if unfinished else ""
        md.append(
            f"| {md_text(r.game)} | {_md_config(r.config)} | {seeds} | {score_text(r)} | "
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
            f"| {_md_config(a.config)} | {md_text(', '.join(a.games))} | {a.runs} | {_fmt(a.iqm, 3)} | "
            f"{_ci(a.ci_low, a.ci_high, 3)} | {_fmt(a.mean, 3)} | {_fmt(a.median, 3)} |"
        )
    return md


def _rel(path: Path, out: Path) -> Path:
    try:
        return path.relative_to(out)
    except ValueError:
        return path


def _md_jobs(jobs: Sequence[Job], out: Path, missing: Sequence[Missing]) -> list[str]:
    md = [
        "",
        "## Jobs",
        "",
        "| job | game | config | seed | score | train score | status |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for j in jobs:
        status = j.status
        if j.failure is not None:
            code = j.failure.get("exit_code")
            status = f"failed{f' (exit {code})' if code is not None else ''}: {j.failure['error']}"
        status = "; ".join([status, *j.notes])
        md.append(
            f"| {md_code(_rel(j.path, out))} | {md_text(j.game)} | {_md_config(j.config)} | {md_text(j.seed)} | "
            f"{_fmt(j.score)} | {_fmt(j.train_score)} | {md_text(status)} |"
        )
    for m in missing:
        md.append(
            f"| {md_code(_rel(m.sweep / str(m.num), out))} | – | {_md_config(m.config)} | – | – | – | "
            "never ran (the sweep stopped before it) |"
        )
    return md


def _md_skipped(skipped: Sequence[Skipped], out: Path) -> list[str]:
    if not skipped:
        return []
    md = ["", "## Skipped jobs", "", "Their files could not be read; the report leaves them out.", ""]
    md += [f"- {md_code(_rel(s.path, out))}: {md_text(s.reason)}" for s in skipped]
    return md


if __name__ == "__main__":
    from dqnfast.cli.report import main

    sys.exit(main())
