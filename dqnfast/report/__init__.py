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

The package: the jobs as read from their folders (``jobs``), the statistics (``stats``), the
files written (``write``); its command line is ``dqnfast.cli.report``.
"""

from dqnfast.report.jobs import (
    Job,
    JobError,
    Missing,
    Skipped,
    collect_jobs,
    config_labels,
    is_training_job,
    missing_jobs,
    scan_jobs,
)
from dqnfast.report.stats import Aggregate, Row, aggregate, iqm, iqm_ci, mean_ci, summarize
from dqnfast.report.write import (
    LEGEND_MAX,
    ci_text,
    curves_figure,
    fmt_number,
    md_code,
    md_text,
    plot_curves,
    score_text,
    write_report,
)

__all__ = [
    "Job",
    "JobError",
    "Missing",
    "Skipped",
    "Row",
    "Aggregate",
    "LEGEND_MAX",
    "collect_jobs",
    "scan_jobs",
    "is_training_job",
    "config_labels",
    "summarize",
    "aggregate",
    "missing_jobs",
    "mean_ci",
    "iqm",
    "iqm_ci",
    "write_report",
    "plot_curves",
    "curves_figure",
    "md_text",
    "md_code",
    "score_text",
    "fmt_number",
    "ci_text",
]
