"""Videos of evaluation games at full Atari resolution (210x160 RGB), by deterministic replay.

The agent plays on 84x84 grey frames; nobody wants to watch those. ALE is deterministic
for a fixed seed (no-op starts and sticky actions draw from the env's own seeded RNG), and
envpool seeds env i of a batch with ``seed + i``. So a game is recorded by keeping the
actions every env was sent, then re-playing env i's actions in a one-env colour envpool env
(``img_height=210, img_width=160, gray_scale=False, stack_num=1``, every protocol setting
copied from the evaluation env's ``config``) seeded ``seed + i``. Every replayed step's
reward and ``elapsed_step`` are checked against the recorded ones; any difference raises
``ReplayDivergedError`` (no video of a game that was not the one played).
tests/test_evaluate.py checks the replay frame by frame against the original grey env.

Writing needs ``imageio`` and ``imageio-ffmpeg`` (its wheels ship an ffmpeg binary).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "ReplayDivergedError",
    "VideoError",
    "check_video_deps",
    "iter_replay",
    "replay_frames",
    "write_frames",
]

# envpool Atari settings that define the game and the protocol; copied into the replay env
PROTOCOL_KEYS = (
    "max_episode_steps",
    "frame_skip",
    "noop_max",
    "zero_discount_on_life_loss",
    "episodic_life",
    "reward_clip",
    "use_fire_reset",
    "mode",
    "difficulty",
    "full_action_space",
    "repeat_action_probability",
    "use_inter_area_resize",
)


class VideoError(RuntimeError):
    """A video cannot be made (missing packages, not an Atari game)."""


class ReplayDivergedError(VideoError):
    """Re-playing the recorded actions did not reproduce the recorded game."""


def check_video_deps(gif: bool = False) -> None:
    """Raises VideoError (one line) when imageio / imageio-ffmpeg are missing."""
    import importlib.util

    missing = [m for m in ("imageio", "imageio_ffmpeg") if importlib.util.find_spec(m) is None]
    if gif and not missing and importlib.util.find_spec("PIL") is None:
        missing.append("pillow")
    if missing:
        pkgs = " ".join(m.replace("_", "-") for m in missing)
        raise VideoError(f"videos need {', '.join(missing)}: pip install {pkgs}")


def colour_env_kwargs(config: dict, seed: int) -> dict[str, Any]:
    """envpool.make kwargs for a one-env 210x160 RGB replay of an env built with ``config`` (``env.config``)."""
    kw = {k: config[k] for k in PROTOCOL_KEYS if k in config}
    kw.update(
        env_type="gymnasium",
        num_envs=1,
        batch_size=1,
        num_threads=1,
        seed=int(seed),
        img_height=210,
        img_width=160,
        gray_scale=False,
        stack_num=1,
    )
    return kw


def iter_replay(
    task_id: str,
    env_config: dict,
    env_index: int,
    actions: Sequence[int],
    rewards: Sequence[float],
    elapsed: Sequence[int],
    start: int,
    stop: int,
    **override: Any,
) -> Iterator[np.ndarray]:
    """Re-plays env ``env_index`` of a recorded evaluation and yields frames ``start..stop-1``, one at a time.

    task_id: envpool id (``Pong-v5``). env_config: the evaluation env's ``env.config``
    (its ``seed`` is the batch's base seed). actions[k]: the action sent after result k;
    rewards[k] / elapsed[k]: result k's unclipped reward and ``elapsed_step`` (result 0
    is the reset). Results ``start..stop-1`` are one game (start: its reset). override:
    extra envpool kwargs (tests replay in grey 84x84 this way).
    Yields uint8[210, 160, 3] frames (or the override's frame shape, HWC).
    Raises ReplayDivergedError at the first step whose reward or elapsed_step differs.
    """
    import envpool

    if env_config.get("img_height") is None:
        raise VideoError(f"videos are for Atari games; {task_id} has no screen")
    kw = colour_env_kwargs(env_config, int(env_config["seed"]) + int(env_index))
    kw.update(override)
    env = envpool.make(task_id, **kw)
    try:
        env.async_reset()
        for k in range(stop):
            obs, reward, _, _, info = env.recv()
            r = float(info["reward"][0]) if "reward" in info else float(reward[0])
            e = int(info["elapsed_step"][0])
            if e != int(elapsed[k]) or abs(r - float(rewards[k])) > 1e-6:
                raise ReplayDivergedError(
                    f"video: replaying env {env_index}'s actions diverged at step {k} (reward {r:g} vs {rewards[k]:g}, "
                    f"elapsed_step {e} vs {elapsed[k]}); the emulator is not deterministic here, so no video"
                )
            if k >= start:
                o = obs[0]
                yield np.ascontiguousarray(o.transpose(1, 2, 0)) if o.ndim == 3 else o.copy()
            if k + 1 < stop:
                env.send(np.asarray([actions[k]], np.int32), info["env_id"])
    finally:
        env.close()


def replay_frames(*args: Any, **override: Any) -> np.ndarray:
    """``iter_replay``'s frames as one array uint8[stop - start, H, W, C] (for short games and tests)."""
    return np.stack(list(iter_replay(*args, **override)))


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_frames(
    frames: Iterable[np.ndarray],
    *,
    mp4: str | os.PathLike | None = None,
    gif: str | os.PathLike | None = None,
    fps: float = 15.0,
) -> int:
    """Streams uint8[H, W, 3] frames into an H.264 MP4 and/or a looping GIF; returns the frame count.

    Frames keep their size (H, W even for the MP4). Each file is written to a temporary
    name and renamed when complete: an error (e.g. ReplayDivergedError) leaves no file.
    """
    check_video_deps(gif=gif is not None)
    import imageio.v2 as imageio

    targets = [Path(p) for p in (mp4, gif) if p is not None]
    for p in targets:
        p.parent.mkdir(parents=True, exist_ok=True)
    writers = []
    n = 0
    try:
        if mp4 is not None:
            # macro_block_size=1: keep 210x160 (imageio would otherwise pad to multiples of 16)
            writers.append(
                imageio.get_writer(
                    _tmp(Path(mp4)),
                    format="FFMPEG",
                    fps=float(fps),
                    codec="libx264",
                    macro_block_size=1,
                    pixelformat="yuv420p",
                    quality=8,
                    ffmpeg_log_level="error",
                )
            )
        if gif is not None:
            writers.append(imageio.get_writer(_tmp(Path(gif)), format="GIF", duration=1000.0 / float(fps), loop=0))
        for f in frames:
            f = np.asarray(f, np.uint8)
            for w in writers:
                w.append_data(f)
            n += 1
        for w in writers:
            w.close()
        writers = []
        for p in targets:
            os.replace(_tmp(p), p)
    finally:
        for w in writers:
            try:
                w.close()
            except Exception:
                pass
        for p in targets:
            _tmp(p).unlink(missing_ok=True)
    return n
