"""A sweep's jobs as the report reads them: run dirs, their overrides, eval.json and metrics.csv.

A job is a folder holding ``.hydra/overrides.yaml`` whose ``.hydra/config.yaml`` is a training
config (an evaluation's output folder, which Hydra writes the same way, is not a job). A job
whose files cannot be read is named and skipped (``Skipped``), never the end of the report.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml

from dqnfast.failure import read_failure

__all__ = [
    "DEFAULT_LABEL",
    "Job",
    "JobError",
    "Missing",
    "Skipped",
    "collect_jobs",
    "config_labels",
    "is_training_job",
    "missing_jobs",
    "read_yaml",
    "scan_jobs",
]

DEFAULT_LABEL = "default"
IGNORED_KEYS = ("seed", "game")  # never part of a config label


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


def read_yaml(path: Path, run_dir: Path, kind: type) -> Any:
    """A job's YAML file, which must hold a ``kind`` (or nothing: ``kind()``); raises JobError."""
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
    overrides = [str(o) for o in read_yaml(run_dir / ".hydra" / "overrides.yaml", run_dir, list)]
    cfg_path = run_dir / ".hydra" / "config.yaml"
    cfg = read_yaml(cfg_path, run_dir, dict) if cfg_path.exists() else {}
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
