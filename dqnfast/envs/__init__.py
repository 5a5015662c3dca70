"""Environments: two backends behind one batched interface (``dqnfast.envs.core``).

* ``dqnfast.envs.envpool``: Atari (pixels, RAM), classic control and envpool's other discrete
  suites (Procgen's images, MiniGrid's views, Box2D's vectors), named the way people say them
  (``Pong``, ``CartPole``, ``StarpilotEasy-v0``).
* ``dqnfast.envs.gym``: any registered Gymnasium id with Discrete actions and Box observations
  (MinAtar among them), named ``gym:<id>`` (``gym:MinAtar/Breakout-v1``), run as a Gymnasium
  vector env.

``resolve_game`` maps a game to ``(task_id, family)`` and ``make_env`` builds the batch of a
resolved game; both pick the backend by the name. Callers look them up on this module at each
call (tests replace them here).
"""

from __future__ import annotations

from typing import Any

from dqnfast.config import EnvsConfig, ProtocolConfig
from dqnfast.envs import envpool as envpool_backend
from dqnfast.envs.core import (
    ActionLog,
    EnvCreationError,
    EnvSpec,
    EnvStepError,
    GameTracker,
    ReplayDivergedError,
    frames_of,
    observation_of,
    raw_reward_of,
)
from dqnfast.envs.envpool import CLASSIC_CONTROL, REPLAY_KEYS, atari_games, make_replay_env

__all__ = [
    "ActionLog",
    "CLASSIC_CONTROL",
    "EnvCreationError",
    "EnvSpec",
    "EnvStepError",
    "GYM_FAMILIES",
    "GameTracker",
    "REPLAY_KEYS",
    "ReplayDivergedError",
    "atari_games",
    "frames_of",
    "image_shape",
    "is_gym",
    "make_env",
    "make_replay_env",
    "observation_of",
    "raw_reward_of",
    "resolve_game",
]

GYM_PREFIX = "gym:"
GYM_FAMILIES = ("gym", "gym_image")


def is_gym(game: str) -> bool:
    """A game of the Gymnasium backend: ``gym:<id>``."""
    return str(game).strip().lower().startswith(GYM_PREFIX)


def resolve_game(game: str, envs: EnvsConfig | None = None) -> tuple[str, str]:
    """Maps a game name to ``(task_id, family)``: family ``atari`` | ``classic`` | ``envpool_image`` (envpool)
    or ``gym`` | ``gym_image`` (a Gymnasium id ``gym:<id>``, vector or image observations).

    envs: the ``envs`` section: for a Gymnasium id ``envs.import`` imported first and ``envs.make_kwargs``
    given to the probe that reads its spaces; for an envpool game ``envs.make_kwargs`` checked against the
    task's envpool settings. Raises ValueError (one line) with the closest valid names
    for an unknown game or an unsupported space; ConfigError naming ``envs.import`` /
    ``envs.make_kwargs`` when they fail.
    """
    name = str(game).strip()
    if is_gym(name):
        from dqnfast.envs import gym as gym_backend  # Gymnasium is imported only for a Gymnasium game

        return gym_backend.resolve(name[len(GYM_PREFIX) :], envs)
    return envpool_backend.resolve_game(name, envs)


def image_shape(task_id: str, family: str) -> tuple[int, ...] | None:
    """One image observation's shape CxHxW of a resolved game with images (``(3, 64, 64)`` for Procgen), or
    None where it is not known before the env is made (a Gymnasium id not resolved in this process)."""
    if family == "envpool_image":
        return envpool_backend.frame_shape(task_id)
    if family == "gym_image":
        from dqnfast.envs import gym as gym_backend  # Gymnasium is imported only for a Gymnasium game

        return gym_backend.FRAME_SHAPES.get(task_id)
    return None


def make_env(
    game: str,
    obs: str,
    envs: EnvsConfig,
    protocol: ProtocolConfig,
    *,
    seed: int,
    num_envs: int | None = None,
    batch_size: int | None = None,
    task: tuple[str, str] | None = None,
) -> tuple[Any, EnvSpec]:
    """Builds the batched env of ``game`` and its EnvSpec (``dqnfast.envs.core``).

    obs: ``pixels`` | ``ram`` (Atari; other games have one observation kind). envs: the
    ``envs`` section. protocol: ``envs.train`` or ``envs.eval`` (Atari only). num_envs /
    batch_size override the section's (for evaluation). task: ``game`` already resolved,
    ``(task_id, family)``. Raises EnvCreationError (one line) when the envs cannot be made.
    """
    task_id, family = task or resolve_game(game, envs)
    if family in GYM_FAMILIES:
        from dqnfast.envs import gym as gym_backend  # Gymnasium is imported only for a Gymnasium game

        return gym_backend.make_env(task_id, envs, seed=seed, num_envs=num_envs)
    return envpool_backend.make_env(
        game, obs, envs, protocol, seed=seed, num_envs=num_envs, batch_size=batch_size, task=(task_id, family)
    )
