"""The ``python -m dqnfast.evaluate`` app without Hydra: ``EvalConfig`` and ``evaluate``.

Loads a checkpoint (a DQN or a REINFORCE run's), checks it fits the game, plays the
protocol (trained vs random, ``dqnfast.evaluation.results.evaluate_network``), writes
eval.json, the plots and, on request, a video into ``<run dir>/eval/`` and prints the table.
The Hydra command line is ``dqnfast.cli.evaluate``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from dqnfast.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    find_checkpoint,
    package_version,
    run_dir_of,
)
from dqnfast.config import NOOP_MAX_HINT, ConfigError, EnvsConfig, EvalProtocolConfig, ExploreConfig
from dqnfast.config.resolve import available_cores, thread_counts
from dqnfast.evaluation.agents import load_agent
from dqnfast.evaluation.protocol import EVAL_SEED_OFFSET
from dqnfast.evaluation.results import eval_json, evaluate_network, format_table, write_json, write_outputs
from dqnfast.evaluation.video import VIDEO_CHOICES, VideoError, check_video_deps, write_videos

__all__ = ["EvalConfig", "check_evaluation", "default_out", "evaluate", "validate_eval"]

log = logging.getLogger("dqnfast.evaluate")


@dataclass
class EvalConfig:
    """``python -m dqnfast.evaluate`` (conf/evaluate.yaml holds the same defaults).

    run: a run dir (its ``checkpoint.pt``) or a checkpoint file, of a DQN or a REINFORCE
    run. episodes: games per agent. num_envs: envs playing them in parallel (at most
    ``episodes``). epsilon: the trained agent's epsilon-greedy (null: the run's
    ``explore.eval_epsilon``, so this and the run's final evaluation are comparable).
    noop_max: up to this many no-op agent steps at each reset, at least 1 (envpool plays between one
    and noop_max, none in games that start with FIRE). repeat_action_probability:
    sticky actions (0.25 in Machado et al. 2018). max_episode_steps: agent steps per game
    (27000 = 108k frames). random_baseline: also play a uniform-random agent with the same
    protocol and seeds. seed: env seed (null: the run's seed + 10000, as train's final
    evaluation); env i of the batch gets seed + i. device: auto | cpu | cuda | cuda:N.
    out: output dir (null: ``<run dir>/eval``, or ``<run dir>/eval-<name>`` for a
    checkpoint other than the newest). plots: write eval_scores.png and
    learning_curve.png. video: write an MP4 of one trained game at 210x160 RGB (Atari
    only). gif: write that game as a looping GIF too. video_episode: which game: first |
    best | median | worst score. video_fps: frames per second of the video (null: real
    time, 60 / frame_skip). game: the game (null: the checkpoint's; set, it must match the
    checkpoint's). num_threads: envpool threads (null: all cores). torch_threads: torch
    CPU threads (null: as training picks them on CPU, else torch's default).
    """

    run: str = "???"
    episodes: int = 100
    num_envs: int = 10
    epsilon: Optional[float] = None
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    max_episode_steps: int = 27000
    random_baseline: bool = True
    seed: Optional[int] = None
    device: str = "auto"
    out: Optional[str] = None
    plots: bool = True
    video: bool = False
    gif: bool = False
    video_episode: str = "best"
    video_fps: Optional[float] = None
    game: Optional[str] = None
    num_threads: Optional[int] = None
    torch_threads: Optional[int] = None


def validate_eval(cfg: EvalConfig) -> None:
    """Value checks; raises ConfigError naming the key."""

    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(key, msg)

    check(
        cfg.run not in (None, "", "???"),
        "run",
        "give the run dir or checkpoint to evaluate: python -m dqnfast.evaluate run=outputs/DATE/TIME",
    )
    check(isinstance(cfg.episodes, int) and cfg.episodes >= 1, "episodes", f"must be >= 1, got {cfg.episodes!r}")
    check(isinstance(cfg.num_envs, int) and cfg.num_envs >= 1, "num_envs", f"must be >= 1, got {cfg.num_envs!r}")
    check(cfg.epsilon is None or 0.0 <= cfg.epsilon <= 1.0, "epsilon", f"must be in [0, 1], got {cfg.epsilon!r}")
    check(isinstance(cfg.noop_max, int) and cfg.noop_max >= 1, "noop_max", f"{NOOP_MAX_HINT}, got {cfg.noop_max!r}")
    check(
        0.0 <= cfg.repeat_action_probability <= 1.0,
        "repeat_action_probability",
        f"must be in [0, 1], got {cfg.repeat_action_probability!r}",
    )
    check(cfg.max_episode_steps >= 1, "max_episode_steps", f"must be >= 1, got {cfg.max_episode_steps!r}")
    check(cfg.seed is None or cfg.seed >= 0, "seed", f"must be >= 0 or null, got {cfg.seed!r}")
    check(
        str(cfg.video_episode) in VIDEO_CHOICES,
        "video_episode",
        f"unknown choice {cfg.video_episode!r}; choose one of {', '.join(VIDEO_CHOICES)}",
    )
    check(cfg.video_fps is None or cfg.video_fps > 0, "video_fps", f"must be > 0 or null, got {cfg.video_fps!r}")
    if cfg.video or cfg.gif:
        try:
            check_video_deps(gif=cfg.gif)
        except VideoError as e:
            raise ConfigError("video", str(e)) from None


def default_out(checkpoint: Path) -> Path:
    """``<run dir>/eval`` for a run's newest checkpoint, ``<run dir>/eval-<stem>`` for another one."""
    run = run_dir_of(checkpoint)
    return run / "eval" if checkpoint.name == CHECKPOINT_NAME else run / f"eval-{checkpoint.stem}"


def _settings(cfg: EvalConfig, train_cfg: dict) -> tuple[EnvsConfig, EvalProtocolConfig]:
    """The evaluation envs: the run's frame skip and stack, this command's protocol (whole games, unclipped)."""
    envs_cfg = train_cfg.get("envs") or {}
    envs = EnvsConfig(
        num_envs=cfg.num_envs,
        num_threads=cfg.num_threads,
        frame_skip=int(envs_cfg.get("frame_skip", 4)),
        stack=int(envs_cfg.get("stack", 4)),
        # a Gymnasium game's: how its envs run, the kwargs they are made with, the module that registers it
        vectorization=envs_cfg.get("vectorization", "sync"),
        make_kwargs=dict(envs_cfg.get("make_kwargs") or {}),
        **{"import": envs_cfg.get("import")},
    )
    protocol = EvalProtocolConfig(
        episodic_life=False,
        reward_clip=False,
        noop_max=cfg.noop_max,
        repeat_action_probability=cfg.repeat_action_probability,
        max_episode_steps=cfg.max_episode_steps,
        episodes=cfg.episodes,
        num_envs=cfg.num_envs,
    )
    return envs, protocol


def _seed_and_epsilon(cfg: EvalConfig, ckpt: dict) -> tuple[int, float]:
    """The env seed (the run's seed + 10000 unless given) and the ε (the run's final evaluation's unless given)."""
    train_cfg = ckpt.get("config") or {}
    counters = ckpt.get("counters") or {}
    seed = int(
        cfg.seed if cfg.seed is not None else int(counters.get("seed", train_cfg.get("seed", 0))) + EVAL_SEED_OFFSET
    )
    eps = cfg.epsilon
    if eps is None:  # one default for both evaluations of a run: the ε its final evaluation used
        eps = float((train_cfg.get("explore") or {}).get("eval_epsilon", ExploreConfig.eval_epsilon))
    return seed, float(eps)


def _load(cfg: EvalConfig) -> tuple[Path, dict]:
    from dqnfast.checkpoint import load_checkpoint  # looked up at each call: tests replace it on its module

    try:
        path = find_checkpoint(cfg.run)
        return path, load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError("run", str(e)) from None


def _log_to_files(text: str) -> None:
    """Writes ``text`` as one INFO record to the root logger's log files only (Hydra's ``<job>.log``)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def _echo(result: dict[str, Any], out: Path, table: str) -> None:
    video = result["video"] or {}
    print(table)
    print(
        f"wrote {out / 'eval.json'}"
        + "".join(f", {Path(p).name}" for p in result["plots"].values())
        + "".join(f", {Path(video[k]).name}" for k in ("mp4", "gif") if k in video)
    )


@dataclass
class _Prepared:
    """What an evaluation checked and built before it plays: checkpoint, settings, agent, device."""

    path: Path
    ckpt: dict
    envs: EnvsConfig
    protocol: EvalProtocolConfig
    agent: Any
    device: Any


def _prepare(cfg: EvalConfig) -> _Prepared:
    """Every check of an evaluation that needs no game played; raises ConfigError naming the key."""
    from dqnfast.config.resolve import resolve_device  # looked up at each call: tests replace it on its module

    validate_eval(cfg)
    path, ckpt = _load(cfg)
    envs, protocol = _settings(cfg, ckpt.get("config") or {})
    agent = load_agent(ckpt, game=cfg.game, envs=envs, protocol=protocol)
    if (cfg.video or cfg.gif) and agent.family not in ("atari", "envpool_image"):
        raise ConfigError("video", f"videos are for Atari and Procgen games; {agent.task_id} has no screen")
    return _Prepared(path, ckpt, envs, protocol, agent, resolve_device(cfg.device))


def check_evaluation(cfg: EvalConfig) -> None:
    """Runs every check ``evaluate`` makes before it plays (values, checkpoint, game, video, device).

    The command line calls it before Hydra writes the output folder's record, so a refused
    evaluation leaves the folder (and an earlier evaluation's record in it) as it was.
    Raises ConfigError naming the key.
    """
    _prepare(cfg)


def evaluate(cfg: EvalConfig, out: str | os.PathLike | None = None, *, echo: bool = True) -> dict[str, Any]:
    """The ``dqnfast.evaluate`` app without Hydra: loads, checks, plays, writes, prints; returns eval.json's dict.

    Raises ConfigError (key ``run`` for an unusable or mismatched checkpoint, the key's name
    for a bad value), ``dqnfast.evaluation.video.VideoError`` and ``ReplayDivergedError``.
    """
    prep = _prepare(cfg)
    path, ckpt, envs, protocol, agent, device = prep.path, prep.ckpt, prep.envs, prep.protocol, prep.agent, prep.device
    _, _, threads = thread_counts(available_cores(), cpu=device.type == "cpu", torch_threads=cfg.torch_threads)
    if threads:  # as in training: spinning torch workers beside envpool's cost up to 10x
        torch.set_num_threads(threads)
    agent.network.to(device)
    seed, eps = _seed_and_epsilon(cfg, ckpt)
    counters = ckpt.get("counters") or {}
    env_steps = int(counters.get("env_steps", 0))
    start = time.perf_counter()
    log.info(
        "evaluating %s (%s %s, %d agent steps) on %s: %d games, eps %g, seed %d",
        path,
        agent.learner.upper(),
        agent.task_id,
        env_steps,
        device,
        cfg.episodes,
        eps,
        seed,
    )
    ev = evaluate_network(
        agent.network,
        game=agent.task_id,
        obs=agent.spec.obs_kind,
        envs=envs,
        protocol=protocol,
        epsilon=eps,
        seed=seed,
        device=device,
        random_baseline=cfg.random_baseline,
        record=cfg.video or cfg.gif,
        learner=agent.learner,
        task=(agent.task_id, agent.family),
    )
    fs = int(envs.frame_skip) if agent.family == "atari" else 1
    result = eval_json(
        ev.result,
        game=agent.task_id,
        checkpoint=path.resolve(),
        run_dir=run_dir_of(path),
        run_name=ckpt.get("run_name"),
        env_steps=env_steps,
        frames=int(counters.get("frames", env_steps * fs)),
        updates=int(counters.get("updates", 0)),
        time=time.perf_counter() - start,
        dqnfast=package_version(),
    )
    out = Path(out or cfg.out or default_out(path))
    write_outputs(result, out, metrics_csv=run_dir_of(path) / "metrics.csv", frame_skip=fs, plots=cfg.plots)
    if cfg.video or cfg.gif:
        result["video"] = _video(cfg, ev.trained, out)
        write_json(result, out / "eval.json")
    table = format_table(result)
    _log_to_files(table)  # the results table in evaluate.log; stdout gets it below
    if echo:
        _echo(result, out, table)
    return result


def _video(cfg: EvalConfig, played: Any, out: Path) -> dict[str, Any]:
    """Writes the MP4 / GIF of the ``video_episode`` trained game; returns eval.json's ``video``."""
    kinds = " and ".join(k for k, on in (("MP4", cfg.video), ("GIF", cfg.gif)) if on)
    log.info("writing the %s of the %s trained game (re-played in colour) to %s", kinds, cfg.video_episode, out)
    return write_videos(played, out, which=str(cfg.video_episode), mp4=cfg.video, gif=cfg.gif, fps=cfg.video_fps)
