"""metrics.csv: one row per ``logger.log_every`` agent steps, kept up to the checkpoint on resume."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from dqnfast.atomic import atomic_open
from dqnfast.loggers.base import (
    DEAD_UNIT_COLUMNS,
    METRIC_COLUMNS,
    STEP_KEY,
    log,
)

EMPTY_UNTIL_LEARNING = ("loss", "q_mean", "grad_norm", "grad_norm_max", *DEAD_UNIT_COLUMNS)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class CsvLogger:
    """``metrics.csv``: a header, then one row per ``log_metrics``, flushed at once.

    resume_step: keep an existing file's rows up to this many agent steps (the
    checkpoint a resumed run starts from) and append after them; None = a new file.
    """

    def __init__(
        self, path: str | Path, columns: Sequence[str] = METRIC_COLUMNS, *, resume_step: int | None = None
    ) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                header = tuple(reader.fieldnames or ())
            kept = [r for r in rows if r.get(STEP_KEY) and float(r[STEP_KEY]) <= resume_step]
            # Rows written after the checkpoint, or a file from a version with other columns
            # (appended rows must match the header): rewrite atomically, old rows' new cells empty.
            if len(kept) != len(rows) or header != self.columns:
                with atomic_open(self.path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                    w.writeheader()
                    w.writerows(kept)
                if len(kept) != len(rows):
                    log.info("metrics.csv: dropped %d rows written after the checkpoint", len(rows) - len(kept))
            self._file = open(self.path, "a", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        else:
            self._file = open(self.path, "w", newline="")
            self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
            self._writer.writeheader()
            self._file.flush()

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        # No update yet (random play before learning starts): loss and q_mean have no value,
        # an empty cell rather than "nan".
        row = {k: ("" if k in EMPTY_UNTIL_LEARNING and _missing(v) else v) for k, v in row.items()}
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
