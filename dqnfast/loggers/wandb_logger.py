"""Weights & Biases: the only module that imports wandb (lazily, when ``logger.wandb`` is on)."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from dqnfast.config import LoggerConfig
from dqnfast.loggers.base import (
    METRIC_KEYS,
    STEP_KEY,
    WANDB_RUN_ID_FILE,
    RunInfo,
    _finite,
    _one_line,
    eval_scalars,
    log,
)


def _wandb_base_url(wandb: Any) -> str:
    try:
        from wandb.sdk import wandb_setup  # wandb: imported only by a run that tracks with it

        return str(wandb_setup.singleton().settings.base_url)
    except Exception:  # other wandb versions: its default server
        return "https://api.wandb.ai"


def _wandb_has_credentials(wandb: Any, base_url: str) -> bool:
    """Whether wandb would find credentials (env, netrc, settings) without prompting."""
    try:  # wandb >= 0.22: the lookup wandb.init does, without prompting or saving anything
        from wandb.sdk.lib import wbauth  # wandb: as above

        return (
            wbauth.authenticate_session(host=base_url, source="dqnfast", prompt=False, update_session=False) is not None
        )
    except ImportError:
        pass
    except Exception:  # a malformed key: let wandb.init report it, then fall back
        return True

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


def choose_wandb_mode(
    requested: str, *, has_credentials: Callable[[], bool], reachable: Callable[[], bool]
) -> tuple[str, str | None]:
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
        import wandb  # half a second of imports or more: only for a run with logger=wandb

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
            project=cfg.wandb_project,
            entity=cfg.wandb_entity,
            name=info.name,
            group=cfg.wandb_group or info.group,
            tags=[t[:64] for t in tags],
            job_type=info.job_type,
            config=info.config,
            dir=str(info.run_dir),
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run = None
        if mode == "online":
            try:
                self.run = wandb.init(
                    mode="online", settings=wandb.Settings(silent=True, init_timeout=cfg.wandb_init_timeout), **kwargs
                )
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
            log.warning(
                "wandb: %s; logging offline to %s (upload later: wandb sync %s)", reason, self.sync_dir, self.sync_dir
            )
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
        artifact = self.wandb.Artifact(
            f"checkpoint-{self.run.id}",
            type="model",
            metadata={"env_steps": step, "game": self.info.game, **(metadata or {})},
        )
        artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=["latest", f"step-{step}"])

    def close(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None
        run.finish(exit_code=exit_code)
        if self.mode == "offline":
            log.info("wandb: offline run in %s; upload it with: wandb sync %s", self.sync_dir, self.sync_dir)
