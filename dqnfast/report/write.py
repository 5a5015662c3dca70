"""The report's files: report.md (tables, jobs, the best Optuna trial), report.png (learning curves), report.csv.

Every value read from a job's files is escaped for Markdown where report.md shows it
(``md_text``, ``md_code``); every file is written atomically.
"""

from __future__ import annotations

import csv
import html
import math
import re
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import numpy as np

from dqnfast.atomic import atomic_open
from dqnfast.report.jobs import (
    DEFAULT_LABEL,
    Job,
    JobError,
    Missing,
    Skipped,
    config_labels,
    missing_jobs,
    read_yaml,
    scan_jobs,
)
from dqnfast.report.stats import Aggregate, Row, aggregate, summarize

__all__ = [
    "CSV_COLUMNS",
    "LEGEND_MAX",
    "ci_text",
    "curves_figure",
    "fmt_number",
    "md_code",
    "md_text",
    "plot_curves",
    "score_text",
    "write_report",
]


def fmt_number(x: float, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals and thousands separators (3 significant digits from 1e5); ``–`` if not finite."""
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    return f"{x:,.{digits}f}" if abs(x) < 1e5 else f"{x:.3g}"


def ci_text(lo: float, hi: float, digits: int = 2) -> str:
    """A confidence interval as ``[lo, hi]`` (``fmt_number``); ``–`` when either bound is not finite."""
    return f"[{fmt_number(lo, digits)}, {fmt_number(hi, digits)}]" if math.isfinite(lo) and math.isfinite(hi) else "–"


def score_text(r: Row) -> str:
    """``mean ± std`` of a row; ``mean (n=1)`` for one seed, whose sample std is undefined; ``–`` for none."""
    if r.n == 0:
        return "–"
    if r.n == 1:
        return f"{fmt_number(r.mean)} (n=1)"
    return f"{fmt_number(r.mean)} ± {fmt_number(r.std)}"


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
    from matplotlib.lines import Line2D  # a third of a second of imports: only when the figure is drawn

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
            res = read_yaml(p, d, dict)
        except JobError as e:
            out += ["", f"## Optuna: best trial ({md_text(p)})", "", f"Not shown: {md_text(e)}."]
            continue
        out += ["", f"## Optuna: best trial ({md_text(p)})", ""]
        best = res.get("best_value")
        if isinstance(best, (int, float)):
            out.append(f"best value (final evaluation mean): **{fmt_number(float(best))}**")
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
            f"{ci_text(r.ci_low, r.ci_high)} | {fmt_number(r.hns, 3)} | {fmt_number(r.train_score)} | {r.env_steps:,} |"
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
            f"| {_md_config(a.config)} | {md_text(', '.join(a.games))} | {a.runs} | {fmt_number(a.iqm, 3)} | "
            f"{ci_text(a.ci_low, a.ci_high, 3)} | {fmt_number(a.mean, 3)} | {fmt_number(a.median, 3)} |"
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
            f"{fmt_number(j.score)} | {fmt_number(j.train_score)} | {md_text(status)} |"
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
