"""TensorBoard event files in the run dir's ``tensorboard/`` (imported only when enabled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from dqnfast.config import ConfigError
from dqnfast.loggers.base import (
    METRIC_KEYS,
    STEP_KEY,
    RunInfo,
    _finite,
    eval_scalars,
    flatten,
)


class TensorBoardLogger:
    """TensorBoard event files in ``<run dir>/tensorboard``: metrics, eval, images, hparams."""

    def __init__(self, info: RunInfo) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # the optional tensorboard extra
        except ImportError as e:
            raise ConfigError(
                "logger.tensorboard", f"needs the tensorboard package: pip install tensorboard ({e})"
            ) from None
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
        scalars = eval_scalars(result, self.info.game)
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, global_step=step)
        scores = [s for s in result.get("scores", []) or [] if _finite(s)]
        if scores:
            self.writer.add_histogram("eval/scores", np.asarray(scores, dtype=np.float64), global_step=step)
        for p in map(Path, media):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg"):
                import matplotlib.image  # a third of a second of imports: only when an image is logged

                img = matplotlib.image.imread(str(p))
                if img.dtype != np.uint8:
                    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
                if img.ndim == 2:
                    img = img[..., None]
                self.writer.add_image(f"eval/{p.stem}", img[..., :3], global_step=step, dataformats="HWC")
            else:  # videos need moviepy and a tensor: point to the file instead
                self.writer.add_text(f"eval/{p.stem}", str(p), global_step=step)
        hparams = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flatten(self.info.config).items()
        }
        metrics = {
            f"hparam/{k.split('/', 1)[1]}": v
            for k, v in scalars.items()
            if k in ("eval/mean", "eval/median", "eval/human_normalized")
        }
        if hparams and metrics:
            self.writer.add_hparams(hparams, metrics, run_name=".", global_step=step)

    def log_checkpoint(self, path: str | Path, *, step: int, metadata: Mapping[str, Any] | None = None) -> None:
        pass

    def close(self, exit_code: int = 0) -> None:
        self.writer.close()
