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

One backend per module (``console``, ``csv_file``, ``wandb_logger``, ``tensorboard_logger``);
only ``wandb_logger`` imports wandb. wandb and tensorboard are imported only when enabled;
nothing here imports hydra (the CLI
passes the Hydra sweep as plain values in ``RunInfo``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from dqnfast.config import LoggerConfig
from dqnfast.loggers.base import (
    METRIC_COLUMNS,
    METRIC_KEYS,
    RunInfo,
    _one_line,
    check_logger_config,
    eval_media,
    eval_scalars,
    flatten,
    log,
)
from dqnfast.loggers.console import ConsoleLogger
from dqnfast.loggers.csv_file import CsvLogger
from dqnfast.loggers.tensorboard_logger import TensorBoardLogger
from dqnfast.loggers.wandb_logger import WandbLogger, choose_wandb_mode

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


class RunLoggers:
    """Console + metrics.csv, plus W&B and TensorBoard when ``cfg`` enables them.

    cfg: the logger section. info: the run. total_steps: agent steps the run will take
    (progress bar). columns: metrics.csv columns. start_step: agent steps already done
    (a resumed run: the bar starts there and metrics.csv keeps its rows up to it).
    learning_starts, learning_sps: the phases of the console's time estimate (``ConsoleLogger``).
    """

    def __init__(
        self,
        cfg: LoggerConfig,
        info: RunInfo,
        *,
        total_steps: int,
        columns: Sequence[str] = METRIC_COLUMNS,
        start_step: int = 0,
        desc: str | None = None,
        learning_starts: int = 0,
        learning_sps: float | None = None,
    ) -> None:
        info.run_dir.mkdir(parents=True, exist_ok=True)
        self.info = info
        self.metrics_path = info.run_dir / "metrics.csv"
        self.backends: list[Any] = []
        self.console = ConsoleLogger(
            total_steps=total_steps,
            progress=cfg.progress,
            desc=desc or info.game,
            initial=start_step,
            learning_starts=learning_starts,
            learning_sps=learning_sps,
        )
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
