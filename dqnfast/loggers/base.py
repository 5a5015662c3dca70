"""What every logging backend shares: metric columns and keys, the run's description, helpers."""

from __future__ import annotations

import importlib.util
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from dqnfast.atari_scores import human_normalized
from dqnfast.config import ConfigError, LoggerConfig
from dqnfast.config.schema import WandbMode

log = logging.getLogger("dqnfast.loggers")

# metrics.csv columns, in order. Step counts are agent steps; sps = agent steps per second
# since the previous row; loss and q_mean are averaged over the updates since that row;
# grad_norm / grad_norm_max: mean / max of the global gradient norm before clipping
# (algo.max_grad_norm) over those updates, so a user sees how often the clip binds.
# dead_conv1..3, dead_hidden: the fraction of the layer's ReLU units (a convolution's channels, the
# hidden layer's neurons) that output 0 on every sample of the last update's batch; 1.0 = a layer
# that passes nothing on (a collapsed network); nan for a layer the network lacks or before learning.
DEAD_UNIT_COLUMNS = ("dead_conv1", "dead_conv2", "dead_conv3", "dead_hidden")
METRIC_COLUMNS = (
    "env_steps",
    "frames",
    "episodes",
    "score_mean",
    "score_median",
    "episode_length_mean",
    "loss",
    "q_mean",
    "epsilon",
    "sps",
    "time",
    "updates",
    "grad_norm",
    "grad_norm_max",
    *DEAD_UNIT_COLUMNS,
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
    "grad_norm": "losses/grad_norm",
    "grad_norm_max": "losses/grad_norm_max",
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
    if cfg.wandb and cfg.wandb_mode != WandbMode.disabled and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger.wandb", "needs the wandb package: pip install wandb")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("logger.tensorboard", "needs the tensorboard package: pip install tensorboard")
