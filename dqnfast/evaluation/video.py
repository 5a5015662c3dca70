"""Videos of evaluation games at full Atari resolution (210x160 RGB), by deterministic replay; Procgen's
64x64 colour observations, shown 4x larger, the same way.

The agent plays on 84x84 grey frames; nobody wants to watch those. The evaluation records
every action each env was sent and every result (``dqnfast.envs.ActionLog``); a game is
then re-played alone in a one-env colour envpool env (``img_height=210, img_width=160,
gray_scale=False, stack_num=1``, every protocol setting copied from the evaluation env's
``config``, seeded like the env that played it: ALE is deterministic for a seed). Every
replayed step's reward and ``elapsed_step`` are checked against the recorded ones; any
difference raises ``ReplayDivergedError`` (no video of a game that was not the one played).
tests/test_evaluate.py checks the replay frame by frame against the original grey env.

``write_videos`` picks the game (first, best, median or worst score) and streams its frames
to an H.264 MP4 and/or a looping GIF (``write_frames``; each file appears whole or not at
all, through ``dqnfast.atomic``). Writing needs ``imageio`` and ``imageio-ffmpeg`` (its
wheels ship an ffmpeg binary), a GIF also ``pillow``.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from dqnfast.atomic import atomic_path
from dqnfast.envs import ReplayDivergedError, make_replay_env

__all__ = [
    "VIDEO_CHOICES",
    "ReplayDivergedError",
    "VideoError",
    "check_video_deps",
    "iter_replay",
    "pick_game",
    "replay_frames",
    "write_frames",
    "write_videos",
]

VIDEO_CHOICES = ("first", "best", "median", "worst")
COLOUR = {"img_height": 210, "img_width": 160, "gray_scale": False, "stack_num": 1}
PROCGEN_ZOOM = 4


class VideoError(RuntimeError):
    """A video cannot be made (missing packages, not an Atari or Procgen game)."""


def check_video_deps(gif: bool = False) -> None:
    """Raises VideoError (one line) when imageio / imageio-ffmpeg (and, for a GIF, pillow) are missing."""
    missing = [m for m in ("imageio", "imageio_ffmpeg") if importlib.util.find_spec(m) is None]
    if gif and not missing and importlib.util.find_spec("PIL") is None:
        missing.append("pillow")
    if missing:
        pkgs = " ".join(m.replace("_", "-") for m in missing)
        raise VideoError(f"videos need {', '.join(missing)}: pip install {pkgs}")


def iter_replay(
    task_id: str, env_config: dict, recording: Any, env_index: int, start: int, stop: int, **override: Any
) -> Iterator[np.ndarray]:
    """Re-plays env ``env_index`` of a recorded evaluation in colour and yields frames ``start..stop-1``, one at a time.

    task_id: envpool id (``Pong-v5``). env_config: the evaluation env's ``env.config``.
    recording: its ``ActionLog(results=True)``. Results ``start..stop-1`` are one game
    (start: its reset). override: other envpool kwargs (tests replay in grey 84x84 this way).
    Yields uint8[210, 160, 3] frames (or the override's frame shape, HWC).
    Raises ReplayDivergedError at the first step whose reward or elapsed_step differs.
    """
    atari = env_config.get("img_height") is not None
    if not atari and not env_config.get("env_name"):
        raise VideoError(f"videos are for Atari and Procgen games; {task_id} has no screen")
    env = make_replay_env(task_id, env_config, env_index, **({**COLOUR, **override} if atari else override))
    try:
        for o in recording.replay_env(env, env_index, start, stop):
            f = np.ascontiguousarray(o.transpose(1, 2, 0)) if o.ndim == 3 else o.copy()
            # Procgen's screen is its 64x64 observation: each pixel shown as 4x4 to be watchable
            yield f if atari else f.repeat(PROCGEN_ZOOM, axis=0).repeat(PROCGEN_ZOOM, axis=1)
    except ReplayDivergedError as e:
        raise ReplayDivergedError(f"video: {e}, so no video") from None
    finally:
        env.close()


def replay_frames(*args: Any, **override: Any) -> np.ndarray:
    """``iter_replay``'s frames as one array uint8[stop - start, H, W, C] (for short games and tests)."""
    return np.stack(list(iter_replay(*args, **override)))


def write_frames(
    frames: Iterable[np.ndarray],
    *,
    mp4: str | os.PathLike | None = None,
    gif: str | os.PathLike | None = None,
    fps: float = 15.0,
) -> int:
    """Streams uint8[H, W, 3] frames into an H.264 MP4 and/or a looping GIF; returns the frame count.

    Frames keep their size (H, W even for the MP4). Each file is written through
    ``dqnfast.atomic.atomic_path``: an error (e.g. ReplayDivergedError) leaves no file.
    """
    check_video_deps(gif=gif is not None)
    import imageio.v2 as imageio  # checked by check_video_deps: only a run that writes videos needs it

    n = 0
    with ExitStack() as stack:
        writers = []
        if mp4 is not None:
            tmp = stack.enter_context(atomic_path(mp4))
            # macro_block_size=1: keep 210x160 (imageio would otherwise pad to multiples of 16)
            kw = dict(codec="libx264", macro_block_size=1, pixelformat="yuv420p", quality=8, ffmpeg_log_level="error")
            writers.append(stack.enter_context(imageio.get_writer(tmp, format="FFMPEG", fps=float(fps), **kw)))
        if gif is not None:
            tmp = stack.enter_context(atomic_path(gif))
            writers.append(
                stack.enter_context(imageio.get_writer(tmp, format="GIF", duration=1000.0 / float(fps), loop=0))
            )
        for f in frames:
            f = np.asarray(f, np.uint8)
            for w in writers:
                w.append_data(f)
            n += 1
    return n


def pick_game(games: list, which: str) -> Any:
    """The ``first`` game, or the one with the ``best``, ``median`` or ``worst`` score (ties: the least to re-play)."""
    if which == "first":
        return min(games, key=lambda g: (g.index, g.env))
    if which in ("best", "worst"):
        sign = -1.0 if which == "best" else 1.0
        return min(games, key=lambda g: (sign * g.score, g.stop, g.env))
    ranked = sorted(games, key=lambda g: (g.score, g.stop, g.env))
    return ranked[(len(ranked) - 1) // 2]


def write_videos(
    played: Any, out: Path, *, which: str = "best", mp4: bool = True, gif: bool = False, fps: float | None = None
) -> dict[str, Any]:
    """Re-plays one recorded game of ``played`` (a ``Played`` with a recording) in colour to MP4 / GIF.

    The file names carry the game's score: ``video_<game>_<which>_score<score>.mp4``.
    Returns eval.json's ``video``: which game (env, its index there), score, length,
    frames, fps, frame shape and the paths.
    """
    if played.recording is None or not played.games:
        raise ValueError("write_videos needs a recorded evaluation (play(..., record=True)) with finished games")
    g = pick_game(played.games, which)
    frames = iter_replay(played.task_id, played.env_config, played.recording, g.env, g.start, g.stop)
    # Atari at the emulator's 60 Hz over its frame skip; Procgen (no frame skip) at 15 agent steps a second
    fps = float(fps or 60.0 / max(1, int(played.env_config.get("frame_skip", 4))))
    stem = f"video_{played.task_id.split('-v')[0]}_{which}_score{g.score:g}"
    paths = {"mp4": out / f"{stem}.mp4" if mp4 else None, "gif": out / f"{stem}.gif" if gif else None}
    shape: list[int] = []

    def seen(frames):
        for f in frames:
            shape[:] = list(f.shape)
            yield f

    n = write_frames(seen(frames), mp4=paths["mp4"], gif=paths["gif"], fps=fps)
    info: dict[str, Any] = {
        "episode": which,
        "env": g.env,
        "game_of_env": g.index,
        "score": g.score,
        "length": g.length,
        "frames": n,
        "fps": fps,
        "shape": shape,
    }
    info.update({k: str(p) for k, p in paths.items() if p is not None})
    return info
