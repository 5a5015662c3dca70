"""The console: a tqdm progress bar, or one log line per metric row."""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping

from dqnfast.loggers.base import (
    STEP_KEY,
    log,
)


class ConsoleLogger:
    """A tqdm bar on stderr (``progress=True``), else one log line per metric row."""

    def __init__(self, *, total_steps: int, progress: bool = True, desc: str = "", initial: int = 0) -> None:
        self.total = total_steps
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                mininterval=1.0,
                desc=desc or None,
                file=sys.stderr,
            )

    def progress(self, k: int) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        score, loss, eps, sps = (row.get(k, math.nan) for k in ("score_mean", "loss", "epsilon", "sps"))
        if self.bar is not None:
            self.bar.set_postfix(
                sps=f"{sps:.0f}", eps=f"{eps:.3f}", score=f"{score:.1f}", loss=f"{loss:.4f}", refresh=False
            )
        else:
            steps = int(row.get(STEP_KEY, 0))
            log.info(
                "%d/%d steps (%.0f%%) | %.0f steps/s | eps %.3f | score %.2f | loss %.4g",
                steps,
                self.total,
                100.0 * steps / max(self.total, 1),
                sps,
                eps,
                score,
                loss,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
