"""Run loggers: console progress and metrics.csv always; Weights & Biases and TensorBoard on request.

One object fans each metric row out to every logger the config asks for::

    loggers = RunLoggers(cfg.logger, RunInfo(run_dir, name, game="Pong-v5", config=config_dict),
                         total_steps=cfg.algo.total_steps)
    loggers.progress(k)                          # hot path: a counter update, never a host sync
    loggers.log_metrics(row)                     # once per metric row (every logger.log_every agent steps)
    loggers.log_eval(result, step=env_steps, media=eval_media(run_dir))   # the final evaluation
    loggers.log_checkpoint(path, step=env_steps) # the final checkpoint (a W&B artifact, if asked)
    loggers.close()                              # or ``with RunLoggers(...) as loggers:``
                                                 # (close(exit_code=1): W&B marks the run failed)

A row is a plain dict of Python numbers keyed by ``METRIC_COLUMNS``: the caller does the
one device-to-host sync per row, so logging costs nothing between rows. metrics.csv keeps
the column names; W&B and TensorBoard get the same values under CleanRL's names
(``METRIC_KEYS``: ``charts/episodic_return``, ``losses/td_loss``, ...) with ``env_steps``
(agent steps) as the x-axis.

W&B modes: ``online`` needs an API key (``WANDB_API_KEY``, ``~/.netrc`` from ``wandb login``,
or wandb's settings file) and a connection to the W&B server; without either the run is
logged ``offline`` into ``<run dir>/wandb/`` and ONE log line says why and how to upload it
later (``wandb sync <dir>``). It never waits on a prompt, and an online ``wandb.init`` that
fails or takes longer than ``logger.wandb_init_timeout`` falls back to offline too.

wandb and tensorboard are imported only when enabled; nothing here imports hydra (the CLI
passes the Hydra sweep as plain values in ``RunInfo``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

from dqnfast.atomic import atomic_open
from dqnfast.config import ConfigError, LoggerConfig

__all__ = [
    "METRIC_COLUMNS",
    "METRIC_KEYS",
    "ConsoleLogger",
    "CsvLogger",
    "RunInfo",
    "RunLoggers",
    "TensorBoardLogger",
    "WandbLogger",
    "check_logger_config",
    "choose_wandb_mode",
    "eval_media",
    "eval_scalars",
    "flatten",
]

log = logging.getLogger("dqnfast.loggers")

# metrics.csv columns, in order. Step counts are agent steps; sps = agent steps per second
# since the previous row; loss and q_mean are averaged over the updates since that row.
METRIC_COLUMNS = (
    "env_steps", "frames", "episodes", "score_mean", "score_median", "episode_length_mean",
    "loss", "q_mean", "epsilon", "sps", "time", "updates",
)
# column -> W&B / TensorBoard key (CleanRL's names where it has one)
METRIC_KEYS = {
    "frames": "charts/frames",
    "episodes": "charts/episodes",
    "score_mean": "charts/episodic_return",
    "score_median": "charts/episodic_return_median",
    "episode_length_mean": "charts/episodic_length",
    "loss": "losses/td_loss",
    "q_mean": "losses/q_values",
    "epsilon": "charts/epsilon",
    "sps": "charts/SPS",
    "time": "charts/time",
    "updates": "charts/updates",
}
STEP_KEY = "env_steps"  # the x-axis of every W&B / TensorBoard metric
MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".mp4")
WANDB_RUN_ID_FILE = "wandb_run_id"  # in the run dir: a resumed run continues the same W&B run


@dataclass
class RunInfo:
    """What the loggers know about a run besides its metrics.

    run_dir: the run's output folder. name: the run name (``{game}__{exp}__{seed}__{time}``).
    game: the envpool id (``Pong-v5``) or the config's game. config: the full resolved config
    (a plain dict; W&B's run config, TensorBoard's hparams). group: W&B group, e.g. the Hydra
    sweep (None: no group). tags: W&B tags. job_type: W&B job type. resume: continue the
    run's previous logs (metrics.csv rows up to ``start_step``; the same W&B run id).
    """

    run_dir: Path
    name: str
    game: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    tags: Sequence[str] = ()
    job_type: str = "train"
    resume: bool = False

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)


# --------------------------------------------------------------------- helpers
def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dict -> {"optim.lr": 1e-4, ...}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _one_line(x: Any) -> str:
    return " ".join(str(x).split())


def eval_scalars(result: Mapping[str, Any], game: str = "") -> dict[str, float]:
    """The scalars of an evaluation result (eval.json) as ``eval/*`` metrics.

    Takes every top-level number (``mean`` -> ``eval/mean``, ...), adds the spread of
    ``scores`` (std, min, max, count) and of ``lengths``, and the human-normalized mean
    for Atari games with reference scores (``dqnfast.atari_scores``).
    """
    import statistics

    from dqnfast.atari_scores import human_normalized

    out: dict[str, float] = {}
    for k, v in result.items():
        if k in (STEP_KEY, "seed", "protocol", "reference"):  # settings, not results
            continue
        if _finite(v):
            out[f"eval/{k}"] = float(v)
        elif isinstance(v, Mapping):  # e.g. the random baseline: {"mean": ...} -> eval/random_mean
            for k2, v2 in v.items():
                if _finite(v2):
                    out[f"eval/{k}_{k2}"] = float(v2)
    scores = [float(s) for s in result.get("scores", []) or [] if _finite(s)]
    if scores:
        out["eval/episodes"] = float(len(scores))
        out["eval/std"] = float(statistics.pstdev(scores)) if len(scores) > 1 else 0.0
        out["eval/min"], out["eval/max"] = min(scores), max(scores)
        out.setdefault("eval/mean", float(statistics.fmean(scores)))
    lengths = [float(n) for n in result.get("lengths", []) or [] if _finite(n)]
    if lengths:
        out["eval/length_mean"] = float(statistics.fmean(lengths))
    short = str(game or result.get("game", "")).split("-v")[0]
    if "eval/mean" in out and math.isfinite(hns := human_normalized(short, out["eval/mean"])):
        out["eval/human_normalized"] = hns
    return out


def eval_media(run_dir: str | Path) -> list[Path]:
    """Plots and videos of a run's evaluation: images/videos in the run dir, ``eval/`` and ``videos/``."""
    run_dir = Path(run_dir)
    found: list[Path] = []
    for d in (run_dir, run_dir / "eval", run_dir / "videos"):
        if d.is_dir():
            found += sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
    return found


def check_logger_config(cfg: LoggerConfig) -> None:
    """Start-up check (no imports of the backends): raises ConfigError if a backend is missing."""
    import importlib.util

    if cfg.wandb and str(cfg.wandb_mode) != "disabled" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger.wandb", "needs the wandb package: pip install wandb")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger.tensorboard", "needs the tensorboard package: pip install tensorboard")


# --------------------------------------------------------------------- console
class ConsoleLogger:
    """A tqdm bar on stderr (``progress=True``), else one log line per metric row."""

    def __init__(self, *, total_steps: int, progress: bool = True, desc: str = "", initial: int = 0) -> None:
        self.total = total_steps
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0,
                            desc=desc or None, file=sys.stderr)

    def progress(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        score, loss, eps, sps = (row.get(k, math.nan) for k in ("score_mean", "loss", "epsilon", "sps"))
        if self.bar is not None:
            self.bar.set_postfix(sps=f"{sps:.0f}", eps=f"{eps:.3f}", score=f"{score:.1f}", loss=f"{loss:.4f}",
                                 refresh=False)
        else:
            steps = int(row.get(STEP_KEY, 0))
            log.info("%d/%d steps (%.0f%%) | %.0f steps/s | eps %.3f | score %.2f | loss %.4g", steps, self.total,
                     100.0 * steps / max(self.total, 1), sps, eps, score, loss)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ------------------------------------------------------------------------- CSV
class CsvLogger:
    """``metrics.csv``: a header, then one row per ``log_metrics``, flushed at once.

    resume_step: keep an existing file's rows up to this many agent steps (the
    checkpoint a resumed run starts from) and append after them; None = a new file.
    """

    def __init__(self, path: str | Path, columns: Sequence[str] = METRIC_COLUMNS, *,
                 resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            kept = [r for r in rows if r.get(STEP_KEY) and float(r[STEP_KEY]) <= resume_step]
            if len(kept) != len(rows):  # rows written after the checkpoint: rewrite atomically without them
                with atomic_open(self.path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                    w.writeheader()
                    w.writerows(kept)
                log.info("metrics.csv: dropped %d rows written after the checkpoint", len(rows) - len(kept))
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        else:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
            self._writer.writeheader()
            self._file.flush()

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# ------------------------------------------------------------------------ W&B
def _wandb_base_url(wandb: Any) -> str:
    try:
        from wandb.sdk import wandb_setup

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:  # other wandb versions: its default server
        return "https://api.wandb.ai"


def _wandb_has_credentials(wandb: Any, base_url: str) -> bool:
    """Whether wandb would find credentials (env, netrc, settings) without prompting."""
    try:  # wandb >= 0.22: the lookup wandb.init does, without prompting or saving anything
        from wandb.sdk.lib import wbauth

        return wbauth.authenticate_session(host=base_url, source="dqnfast", prompt=False,
                                           update_session=False) is not None
    except ImportError:
        pass
    except Exception:  # a malformed key: let wandb.init report it, then fall back
        return True
    import netrc

    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlsplit(base_url).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the W&B server opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_wandb_mode(requested: str, *, has_credentials: Callable[[], bool],
                      reachable: Callable[[], bool]) -> tuple[str, str | None]:
    """(mode, reason): ``online`` only with credentials and a reachable server, else ``offline``."""
    requested = str(requested)
    if requested != "online":
        return requested, None
    if not has_credentials():
        return "offline", "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    if not reachable():
        return "offline", "W&B server not reachable"
    return "online", None


class WandbLogger:
    """One W&B run: the full config, every metric against env_steps, eval results and media.

    cfg: the logger section. info: the run. wandb is imported here, lazily.
    """

    def __init__(self, cfg: LoggerConfig, info: RunInfo) -> None:
        import wandb

        self.wandb = wandb
        self.cfg = cfg
        self.info = info
        base_url = _wandb_base_url(wandb)
        mode, reason = choose_wandb_mode(
            cfg.wandb_mode,
            has_credentials=lambda: _wandb_has_credentials(wandb, base_url),
            reachable=lambda: _reachable(base_url, timeout=min(5.0, cfg.wandb_init_timeout)),
        )
        id_file = info.run_dir / WANDB_RUN_ID_FILE
        run_id = id_file.read_text().strip() if info.resume and id_file.exists() else None
        tags = list(dict.fromkeys([t for t in (info.game.split("-v")[0], *info.tags, *cfg.wandb_tags) if t]))
        kwargs = dict(
            project=cfg.wandb_project, entity=cfg.wandb_entity, name=info.name, group=cfg.wandb_group or info.group,
            tags=[t[:64] for t in tags], job_type=info.job_type, config=info.config, dir=str(info.run_dir),
            id=run_id, resume="allow" if run_id else None,
        )
        self.run = None
        if mode == "online":
            try:
                self.run = wandb.init(mode="online", settings=wandb.Settings(silent=True,
                                      init_timeout=cfg.wandb_init_timeout), **kwargs)
            except Exception as e:  # CommError, AuthenticationError, a timeout: go on offline
                msg = _one_line(e)
                mode, reason = "offline", f"wandb.init online failed ({msg[:160] + '...' if len(msg) > 160 else msg})"
        if self.run is None:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(silent=True), **kwargs)
        self.mode = mode
        if mode != "disabled":
            id_file.write_text(self.run.id + "\n")
        self.sync_dir = self._sync_dir()
        if reason:
            log.warning("wandb: %s; logging offline to %s (upload later: wandb sync %s)", reason, self.sync_dir,
                        self.sync_dir)
        elif mode == "online":
            log.info("wandb: %s", getattr(self.run, "url", None) or self.run.name)
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def _sync_dir(self) -> str:
        for getter in (lambda: self.run.settings.sync_dir, lambda: str(Path(self.run.dir).parent)):
            try:
                if d := getter():
                    return str(Path(d).resolve())
            except Exception:
                continue
        return str(self.info.run_dir / "wandb")

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        data = {METRIC_KEYS.get(k, f"charts/{k}"): v for k, v in row.items() if k != STEP_KEY}
        data[STEP_KEY] = row[STEP_KEY]
        self.run.log(data)

    def log_eval(self, result: Mapping[str, Any], *, step: int, media: Iterable[str | Path] = ()) -> None:
        wandb = self.wandb
        scalars = eval_scalars(result, self.info.game)
        data: dict[str, Any] = {**scalars, STEP_KEY: step}
        scores = [s for s in result.get("scores", []) or [] if _finite(s)]
        if scores:
            data["eval/scores"] = wandb.Histogram(scores)
        for p in map(Path, media):
            key = f"eval/{p.stem}"
            try:
                if p.suffix.lower() in (".mp4", ".gif"):
                    data[key] = wandb.Video(str(p), format=p.suffix.lower()[1:])
                else:
                    data[key] = wandb.Image(str(p))
            except Exception as e:  # a media type this wandb cannot read: log the rest
                log.warning("wandb: not logging %s (%s)", p, _one_line(e))
        self.run.log(data)
        self.run.summary.update(scalars)

    def log_checkpoint(self, path: str | Path, *, step: int, metadata: Mapping[str, Any] | None = None) -> None:
        if not self.cfg.wandb_checkpoint or self.mode == "disabled":
            return
        artifact = self.wandb.Artifact(f"checkpoint-{self.run.id}", type="model",
                                       metadata={"env_steps": step, "game": self.info.game, **(metadata or {})})
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["latest", f"step-{step}"])

    def close(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        run.finish(exit_code=exit_code)
        if self.mode == "offline":
            log.info("wandb: offline run in %s; upload it with: wandb sync %s", self.sync_dir, self.sync_dir)


# ----------------------------------------------------------------- TensorBoard
class TensorBoardLogger:
    """TensorBoard event files in ``<run dir>/tensorboard``: metrics, eval, images, hparams."""

    def __init__(self, info: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ConfigError("logger.tensorboard", f"needs the tensorboard package: pip install tensorboard ({e})") from None
        self.info = info
        self.log_dir = info.run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        if info.config:
            self.writer.add_text("config", "```\n" + json.dumps(info.config, indent=2, default=str) + "\n```")

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        step = int(row[STEP_KEY])
        for k, v in row.items():
            if k != STEP_KEY and isinstance(v, (int, float)):
                self.writer.add_scalar(METRIC_KEYS.get(k, f"charts/{k}"), v, global_step=step)

    def log_eval(self, result: Mapping[str, Any], *, step: int, media: Iterable[str | Path] = ()) -> None:
        import numpy as np

        scalars = eval_scalars(result, self.info.game)
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, global_step=step)
        scores = [s for s in result.get("scores", []) or [] if _finite(s)]
        if scores:
            self.writer.add_histogram("eval/scores", np.asarray(scores, dtype=np.float64), global_step=step)
        for p in map(Path, media):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
                import matplotlib.image

                img = matplotlib.image.imread(str(p))
                if img.dtype != np.uint8:
                    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                if img.ndim == 2:
                    img = img[..., None]
                self.writer.add_image(f"eval/{p.stem}", img[..., :3], global_step=step, dataformats="HWC")
            else:  # videos need moviepy and a tensor: point to the file instead
                self.writer.add_text(f"eval/{p.stem}", str(p), global_step=step)
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in flatten(self.info.config).items()}
        metrics = {f"hparam/{k.split('/', 1)[1]}": v for k, v in scalars.items()
                   if k in ("eval/mean", "eval/median", "eval/human_normalized")}
        if hparams and metrics:
            self.writer.add_hparams(hparams, metrics, run_name=".", global_step=step)

    def log_checkpoint(self, path: str | Path, *, step: int, metadata: Mapping[str, Any] | None = None) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        self.writer.close()


# ----------------------------------------------------------------- composite
class RunLoggers:
    """Console + metrics.csv, plus W&B and TensorBoard when ``cfg`` enables them.

    cfg: the logger section. info: the run. total_steps: agent steps the run will take
    (progress bar). columns: metrics.csv columns. start_step: agent steps already done
    (a resumed run: the bar starts there and metrics.csv keeps its rows up to it).
    """

    def __init__(self, cfg: LoggerConfig, info: RunInfo, *, total_steps: int,
                 columns: Sequence[str] = METRIC_COLUMNS, start_step: int = 0, desc: str | None = None) -> None:
        info.run_dir.mkdir(parents=True, exist_ok=True)
        self.info = info
        self.metrics_path = info.run_dir / "metrics.csv"
        self.backends: list[Any] = []
        self.console = ConsoleLogger(total_steps=total_steps, progress=cfg.progress, desc=desc or info.game,
                                     initial=start_step)
        try:
            self.csv = CsvLogger(self.metrics_path, columns, resume_step=start_step if info.resume else None)
            if cfg.wandb:
                self.backends.append(WandbLogger(cfg, info))
            if cfg.tensorboard:
                self.backends.append(TensorBoardLogger(info))
        except BaseException:
            self.close(exit_code=1)
            raise

    @property
    def wandb(self) -> WandbLogger | None:
        return next((b for b in self.backends if isinstance(b, WandbLogger)), None)

    def progress(self, k: int) -> None:
        """Hot path: ``k`` more agent steps (a counter; the bar redraws at most once a second)."""
        self.console.progress(k)

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        """One metric row (python numbers, METRIC_COLUMNS keys) to every logger."""
        self.csv.log_metrics(row)
        self.console.log_metrics(row)
        for b in self.backends:
            b.log_metrics(row)

    def log_eval(self, result: Mapping[str, Any], *, step: int, media: Iterable[str | Path] = ()) -> None:
        """An evaluation result (eval.json's dict) and its plots/videos (paths that exist)."""
        media = [Path(p) for p in media if Path(p).is_file()]
        for b in self.backends:
            b.log_eval(result, step=step, media=media)

    def log_checkpoint(self, path: str | Path, *, step: int, metadata: Mapping[str, Any] | None = None) -> None:
        """The final checkpoint: a W&B artifact when ``logger.wandb_checkpoint`` is on."""
        for b in self.backends:
            b.log_checkpoint(path, step=step, metadata=metadata)

    def close(self, exit_code: int = 0) -> None:
        """Closes every logger (idempotent). exit_code: the run's (non-zero: W&B marks it failed)."""
        self.console.close()
        if getattr(self, "csv", None) is not None:
            self.csv.close()
        backends, self.backends = self.backends, []
        for b in backends:
            try:
                b.close(exit_code=exit_code)
            except Exception as e:  # closing one logger must not hide the run's own error
                log.warning("closing %s failed: %s", type(b).__name__, _one_line(e))

    def __enter__(self) -> RunLoggers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exit_code=0 if exc_type is None else 1)
