"""The console: a tqdm progress bar, or one log line per metric row."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Mapping

from dqnfast.loggers.base import (
    STEP_KEY,
    log,
)


def _known(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def postfix(row: Mapping[str, Any], *, score_format: str = ".1f") -> dict[str, str]:
    """The progress fields of a metric row: phase, eps (4 significant digits: 0.9995, not 1.000), score, loss."""
    learning = int(row.get("updates") or 0) > 0
    out = {"phase": "learning" if learning else "random play"}
    eps = row.get("epsilon")
    if _known(eps):
        out["eps"] = f"{eps:.4g}"
    score = row.get("score_mean")
    if _known(score):
        out["score"] = format(score, score_format)
    loss = row.get("loss")
    if learning and _known(loss):
        out["loss"] = f"{loss:.4g}"
    return out


class ConsoleLogger:
    """A tqdm bar on stderr (``progress=True``), else one log line per metric row."""

    def __init__(self, *, total_steps: int, progress: bool = True, desc: str = "", initial: int = 0) -> None:
        self.total = total_steps
        self.bar = None
        self._drawn = 0.0
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
        """The bar's fields: phase, ε, score and loss; the speed is tqdm's own (one speed).

        Before learning starts (no update yet) the phase is ``random play`` and there is
        no loss; a figure not known yet (no game finished) is left out rather than ``nan``.
        """
        sps = row.get("sps", math.nan)
        if self.bar is not None:
            self.bar.set_postfix(postfix(row), refresh=False)
        else:
            steps = int(row.get(STEP_KEY, 0))
            log.info(
                "%d/%d steps (%.0f%%) | %.0f steps/s | %s",
                steps,
                self.total,
                100.0 * steps / max(self.total, 1),
                sps,
                " | ".join(f"{k} {v}" for k, v in postfix(row, score_format=".2f").items()),
            )

    def refill(self, done: int, total: int) -> None:
        """A resumed run refilling its ring (no agent steps counted): shown as the phase, redrawn at most once a second."""
        if self.bar is None:
            return
        now = time.monotonic()
        if done >= total or now - self._drawn >= 1.0:
            self._drawn = now
            self.bar.set_postfix(phase=f"refilling replay {done}/{total}", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
