"""The console: a tqdm progress bar, or one log line per metric row, with a time estimate that knows the phases.

A DQN run plays at random until ``algo.learning_starts`` (thousands of agent steps a
second), then learns (on a CPU, tens): one speed for the whole run is wrong by hours in
both directions. ``time_left`` counts the warm-up's steps left at the warm-up's speed and
the learning steps left at the learning speed: measured once learning has run for
``MEASURED_AFTER`` seconds, until then the start-up estimate (``learning_sps``, from
``dqnfast.training.expectations``), and unknown (``?``) when there is neither.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Mapping

from dqnfast.loggers.base import (
    STEP_KEY,
    log,
)

# Seconds of learning after which its measured speed replaces the start-up estimate (the first
# updates include compiling the learner; a few seconds of them say little about the next hours).
MEASURED_AFTER = 30.0


# The console names a layer once this share of its ReLU units is dead (metrics.csv's dead_* columns):
# a layer that passes nothing on, a collapsed network. Only then: a healthy Nature CNN on Pong's
# nearly constant frames already has 30 to 70% of each layer silent on a whole batch.
DEAD_SHOWN = 1.0


def _known(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def postfix(row: Mapping[str, Any], *, score_format: str = ".1f") -> dict[str, str]:
    """The progress fields of a metric row: phase, eps (4 significant digits: 0.9995, not 1.000), score, loss,
    and the layer with the most dead ReLU units where ``DEAD_SHOWN`` of it is dead."""
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
    dead = {k[len("dead_") :]: v for k, v in row.items() if k.startswith("dead_") and _known(v)}
    worst = max(dead, key=dead.__getitem__, default=None)
    if worst is not None and dead[worst] >= DEAD_SHOWN:
        out["dead"] = f"{worst} {dead[worst]:.0%}"
    return out


def time_left(
    done: int, total: int, *, learning_starts: int, random_sps: float | None, learning_sps: float | None
) -> float | None:
    """Seconds until ``total`` agent steps, at ``done`` of them: the random warm-up's steps left
    (before ``learning_starts``) at ``random_sps``, then the learning steps left at ``learning_sps``.

    None when a phase that has steps left has no speed (not measured, no estimate).
    """
    warm_up = max(0, min(learning_starts, total) - done)
    learning = max(0, total - max(done, learning_starts))
    seconds = 0.0
    for steps, sps in ((warm_up, random_sps), (learning, learning_sps)):
        if steps:
            if not sps or sps <= 0:
                return None
            seconds += steps / sps
    return seconds


class _PhaseClock:
    """The speeds ``time_left`` needs, measured from the steps counted (``clock``: seconds, monotonic).

    random_sps: over the warm-up's steps of this segment; learning_sps: over its learning
    steps, once they have run ``MEASURED_AFTER`` seconds (at once without an ``expected`` figure),
    else ``expected``. Each phase is timed from its first counted step, so what comes before
    (making the envs, an exact resume re-playing them, a resume's refill) is not counted in it.
    """

    def __init__(self, initial: int, learning_starts: int, expected: float | None, clock: Callable[[], float]) -> None:
        self.n, self.learning_starts, self.expected, self.clock = initial, learning_starts, expected, clock
        self._warm: tuple[float, int] | None = None  # (time, steps) of the warm-up's first counted step
        self._random_sps: float | None = None
        self._learn: tuple[float, int] | None = None

    def add(self, k: int) -> None:
        now, before = self.clock(), self.n
        self.n += k
        if before < self.learning_starts:
            if self._warm is None:
                self._warm = (now, self.n)
            t0, n0 = self._warm
            if now > t0 and self.n > n0:
                self._random_sps = (min(self.n, self.learning_starts) - n0) / (now - t0)
        if self._learn is None and self.n >= self.learning_starts:
            self._learn = (now, self.n)  # learning's speed is measured from its first counted step

    def learning_sps(self) -> float | None:
        if self._learn is not None:
            t0, n0 = self._learn
            span, steps = self.clock() - t0, self.n - n0
            if span > 0 and steps > 0 and (span >= MEASURED_AFTER or self.expected is None):
                return steps / span
        return self.expected

    def left(self, total: int) -> float | None:
        return time_left(
            self.n,
            total,
            learning_starts=self.learning_starts,
            random_sps=self._random_sps,
            learning_sps=self.learning_sps(),
        )


def _interval(seconds: float | None) -> str:
    """``H:MM:SS`` (``MM:SS`` under an hour), as tqdm writes times; ``?`` when not known."""
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _progress_bar(left: Callable[[], float | None], **kwargs: Any) -> Any:
    """A tqdm bar whose ``{left}`` is ``left()`` (the phase-aware ``time_left``), not tqdm's one-speed guess."""
    from tqdm import tqdm  # a fifth of a second of imports: only for a run that draws a bar

    class Bar(tqdm):
        @property
        def format_dict(self) -> dict[str, Any]:
            return {**super().format_dict, "left": _interval(left())}

    return Bar(bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{left}, {rate_fmt}{postfix}]", **kwargs)


class ConsoleLogger:
    """A tqdm bar on stderr (``progress=True``), else one log line per metric row.

    learning_starts: agent steps of random play before learning (0: learning from the
    start, as REINFORCE does); learning_sps: the learning phase's expected speed in agent
    steps/s until it is measured (None: not known). clock: seconds, monotonic (tests pass
    their own).
    """

    def __init__(
        self,
        *,
        total_steps: int,
        progress: bool = True,
        desc: str = "",
        initial: int = 0,
        learning_starts: int = 0,
        learning_sps: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total_steps
        self.bar = None
        self._drawn = 0.0
        self.phases = _PhaseClock(initial, learning_starts, learning_sps, clock)
        if progress:
            self.bar = _progress_bar(
                self.time_left,
                total=total_steps,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                mininterval=1.0,
                desc=desc or None,
                file=sys.stderr,
            )

    def time_left(self) -> float | None:
        """Seconds left of the run (``time_left``) at the steps counted so far; None: not known yet."""
        return self.phases.left(self.total)

    def progress(self, k: int) -> None:
        self.phases.add(k)
        if self.phases.n > self.total:  # a last batch of whole episodes (REINFORCE) goes past the total
            self.total = self.phases.n
        if self.bar is not None:
            if self.bar.total < self.total:  # tqdm drops a total that the count has passed: move it
                self.bar.total = self.total
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
            left = self.time_left()
            log.info(
                "%d/%d steps (%.0f%%) | %.0f steps/s | %s left | %s",
                steps,
                self.total,
                100.0 * steps / max(self.total, 1),
                sps,
                _interval(left),
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
