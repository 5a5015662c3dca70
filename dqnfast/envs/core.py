"""The batched env interface every backend gives the training loop and the evaluation, and its records.

A backend (``dqnfast.envs.envpool``, ``dqnfast.envs.gym``) returns an env with envpool's
gymnasium-style batched API and an ``EnvSpec``:

* ``async_reset()``; ``recv() -> (obs, reward, terminated, truncated, info)`` with
  ``info["env_id"]`` int[K] (results are keyed by it) and ``info["elapsed_step"]`` int[K];
  ``send(actions int32[K], env_id int[K])``; ``close()``; ``config`` (a dict).
* Autoreset is next-step: the result after ``terminated | truncated`` (at game over) ignores
  the action sent and is a new episode's first observation, reward 0, ``elapsed_step == 0``;
  the replay ring never learns that step.

Here: the spec, the helpers that read a result (``observation_of``, ``frames_of``,
``raw_reward_of``), real game scores (``GameTracker``) and the record of sent actions that
re-plays a deterministic batch (``ActionLog``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

__all__ = [
    "ActionLog",
    "EnvCreationError",
    "EnvSpec",
    "EnvStepError",
    "GameTracker",
    "ReplayDivergedError",
    "frames_of",
    "observation_of",
    "raw_reward_of",
]


@dataclass(frozen=True)
class EnvSpec:
    """What a built env produces, for the ring and the network.

    task_id: the game's id (``Pong-v5``, ``gym:MinAtar/Breakout-v1``). family: ``atari`` |
    ``classic`` | ``envpool_image`` (envpool; Procgen's images) | ``gym`` | ``gym_image`` (Gymnasium, vector or
    image observations).
    obs_kind: ``pixels`` | ``ram`` | ``vector`` | ``image``. frame_shape / frame_dtype: one
    stored frame (``(84, 84)`` uint8, ``(128,)`` uint8, ``(4,)`` float32, ``(4, 10, 10)`` uint8).
    stack: frames per observation (4 for pixels, else 1). obs_shape: what the network sees
    (``(4, 84, 84)``, ``(128,)``, ``(4,)``, ``(4, 10, 10)``). num_actions: discrete actions.
    frame_skip: emulator frames per agent step (1 outside Atari).
    num_envs, batch_size: envpool's (batch_size < num_envs: asynchronous).
    """

    task_id: str
    family: str
    obs_kind: str
    frame_shape: tuple[int, ...]
    frame_dtype: np.dtype
    stack: int
    obs_shape: tuple[int, ...]
    num_actions: int
    frame_skip: int
    num_envs: int
    batch_size: int

    @property
    def is_async(self) -> bool:
        return self.batch_size < self.num_envs


class EnvCreationError(RuntimeError):
    """The envs could not be made, or failed while running; the message is one line: what failed and what
    to change. (Caught where a run's env failure is reported: one line, the run folder kept.)"""


class EnvStepError(EnvCreationError):
    """An env raised in ``step`` or ``reset``: the game, the env and the exception's message, in one line."""


def observation_of(obs: np.ndarray, info: dict, obs_kind: str) -> np.ndarray:
    """What the network sees for one envpool result.

    pixels: obs uint8[K, 4, 84, 84]; ram: info["ram"] uint8[K, 128];
    vector: obs float32[K, d].
    """
    return info["ram"] if obs_kind == "ram" else obs


def frames_of(obs: np.ndarray, info: dict, obs_kind: str) -> np.ndarray:
    """The newest frame of each result, as the replay ring stores it.

    pixels: obs[:, -1] uint8[K, 84, 84] (a strided view); ram: uint8[K, 128];
    vector: float32[K, d].
    """
    if obs_kind == "pixels":
        return obs[:, -1]
    return observation_of(obs, info, obs_kind)


class GameTracker:
    """Real game scores: unclipped rewards summed over lives into whole games.

    A game of env e ends at a reset, i.e. when a result with
    ``elapsed_step == 0`` arrives for e after e has played (that happens after
    ``terminated`` at game over, or after ``truncated``; a life loss under
    ``episodic_life`` is not a reset). The reset step has reward 0, so the score
    is complete when it arrives. Lengths are in agent steps.
    """

    def __init__(self, num_envs: int) -> None:
        self.score = np.zeros(num_envs, np.float64)
        self.length = np.zeros(num_envs, np.int64)
        self.started = np.zeros(num_envs, bool)

    def update(
        self, env_id: np.ndarray, raw_reward: np.ndarray, elapsed_step: np.ndarray
    ) -> list[tuple[int, float, int]]:
        """Feeds one envpool result; returns ``[(env, score, length), ...]`` of games that ended.

        env_id: int[K]; raw_reward: float[K] unclipped; elapsed_step: int[K] (``info["elapsed_step"]``).
        """
        ended: list[tuple[int, float, int]] = []
        first = elapsed_step == 0
        if first.any():
            for e in env_id[first & self.started[env_id]]:
                ended.append((int(e), float(self.score[e]), int(self.length[e])))
            reset = env_id[first]
            self.score[reset] = 0.0
            self.length[reset] = 0
            self.started[reset] = True
        cont = env_id[~first]
        self.score[cont] += raw_reward[~first]
        self.length[cont] = elapsed_step[~first]
        return ended

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the games in progress: score float64[N], length int64[N], started bool[N]."""
        return {"score": self.score.copy(), "length": self.length.copy(), "started": self.started.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.score[:] = np.asarray(state["score"])
        self.length[:] = np.asarray(state["length"])
        self.started[:] = np.asarray(state["started"])


def raw_reward_of(reward: np.ndarray, info: dict) -> np.ndarray:
    """The unclipped reward: ``info["reward"]`` for Atari, the reward itself otherwise."""
    r = info.get("reward")
    return reward if r is None else r


class ReplayDivergedError(RuntimeError):
    """Re-playing recorded actions did not reproduce the recorded results (the emulator was not deterministic)."""


class _Rows:
    """A growable array of rows [T, N] (capacity doubles), ``rows`` the filled part."""

    def __init__(self, width: int, dtype: Any) -> None:
        self._buf = np.zeros((1024, width), dtype)
        self.n = 0

    def extend(self, rows: np.ndarray) -> None:
        while self.n + len(rows) > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self.n : self.n + len(rows)] = rows
        self.n += len(rows)

    @property
    def rows(self) -> np.ndarray:
        return self._buf[: self.n]


class ActionLog:
    """The record of every action sent to a synchronous envpool batch; it re-plays the envs exactly.

    ALE and envpool's classic control are deterministic for a seed and an action sequence
    (no-op starts and sticky actions draw from the env's own seeded RNG), so the actions
    and the batch's seed are enough to bring the envs back: the exact resume of a training
    run, and the colour videos of evaluation games.

    The format (in memory, and ``envs.actions`` of a checkpoint as a torch tensor):
    ``rows`` uint8[T, N], ``rows[k, e]`` the action sent to env e after its result k (result
    0 is the reset; one byte per agent step, as envpool's discrete actions number at most
    18). With ``results=True`` also ``rewards`` float32[R, N] (unclipped) and ``elapsed``
    int32[R, N] (``info["elapsed_step"]``) of result k, R = T or T + 1: they tell the games
    apart and check a replay.

    Recording: ``append(row)`` after each send, or use the log as the env
    (``ActionLog(n, env=env)``: ``async_reset`` / ``recv`` / ``send`` / ``close`` / ``config``
    pass through and are recorded). Re-playing: ``replay`` fast-forwards a fresh batch to
    where the log ends (resume); ``replay_env`` re-plays one env alone and yields its
    observations (videos). Synchronous batches only: a partial batch raises ValueError.
    """

    def __init__(
        self, num_envs: int, rows: np.ndarray | None = None, *, env: Any = None, results: bool = False
    ) -> None:
        self.num_envs = int(num_envs)
        self.env = env
        self._actions = _Rows(self.num_envs, np.uint8)
        self._results = (_Rows(self.num_envs, np.float32), _Rows(self.num_envs, np.int32)) if results else None
        if rows is not None and len(rows):
            self.extend(np.asarray(rows, np.uint8))

    # ------------------------------------------------------------ the record
    @property
    def n(self) -> int:
        """Rows of actions recorded."""
        return self._actions.n

    @property
    def rows(self) -> np.ndarray:
        """uint8[T, N]: the actions sent (a view; copy it to keep it)."""
        return self._actions.rows

    @property
    def rewards(self) -> np.ndarray:
        """float32[R, N]: each result's unclipped reward (``results=True`` only)."""
        return self._recorded()[0].rows

    @property
    def elapsed(self) -> np.ndarray:
        """int32[R, N]: each result's ``elapsed_step``, 0 at a reset (``results=True`` only)."""
        return self._recorded()[1].rows

    def _recorded(self) -> tuple[_Rows, _Rows]:
        if self._results is None:
            raise ValueError("this ActionLog records actions only; make it with results=True")
        return self._results

    def extend(self, rows: np.ndarray) -> None:
        """Appends rows of actions uint8[K, N]."""
        self._actions.extend(np.asarray(rows, np.uint8))

    def append(self, row: np.ndarray) -> None:
        """Appends one row of actions [N] (every env's action of one step, indexed by env id)."""
        self.extend(np.asarray(row, np.uint8)[None])

    def _row(self, values: np.ndarray, env_id: np.ndarray, dtype: Any) -> np.ndarray:
        """``values`` (keyed by ``env_id``) as a row indexed by env id; a partial batch is refused."""
        ids = np.asarray(env_id)
        if len(ids) != self.num_envs:
            raise ValueError(
                f"ActionLog records synchronous batches of {self.num_envs} envs, got {len(ids)} results at once"
            )
        row = np.empty(self.num_envs, dtype)
        row[ids] = values
        return row

    # ------------------------------------------------------- the env, recorded
    @property
    def config(self) -> dict:
        return self.env.config

    def async_reset(self) -> None:
        self.env.async_reset()

    def recv(self) -> tuple:
        out = self.env.recv()
        if self._results is not None:
            _, reward, _, _, info = out
            ids = info["env_id"]
            self._results[0].extend(self._row(raw_reward_of(reward, info), ids, np.float32)[None])
            self._results[1].extend(self._row(info["elapsed_step"], ids, np.int32)[None])
        return out

    def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
        self.append(self._row(actions, env_id, np.uint8))
        self.env.send(actions, env_id)

    def close(self) -> None:
        self.env.close()

    # -------------------------------------------------------------- replaying
    def replay(self, env: Any, rows: np.ndarray, stop: Any = None) -> int:
        """Sends ``rows`` (uint8[T, num_envs]) to a freshly reset ``env``, recording them; returns steps sent.

        ``stop``: an object whose ``signum`` ends the replay early when set.
        """
        sent = 0
        for row in rows:
            ids = env.recv()[4]["env_id"]
            env.send(row[ids].astype(np.int32), ids)
            sent += 1
            if stop is not None and stop.signum:
                break
        self.extend(rows)
        return sent

    def replay_env(self, env: Any, env_index: int, start: int, stop: int) -> Iterator[np.ndarray]:
        """Re-plays env ``env_index`` alone and yields its observations of results ``start..stop-1``, one at a time.

        env: a fresh one-env env that plays as that env (``make_replay_env``; the caller
        closes it). Every result up to ``stop`` is checked against the recorded reward and
        ``elapsed_step``; the first difference raises ReplayDivergedError. Yields obs[0]
        (the env's observation, any shape).
        """
        rewards, elapsed = self.rewards[:, env_index], self.elapsed[:, env_index]
        actions = self.rows[:, env_index]
        env.async_reset()
        for k in range(stop):
            obs, reward, _, _, info = env.recv()
            r, e = np.float32(raw_reward_of(reward, info)[0]), int(info["elapsed_step"][0])
            if e != int(elapsed[k]) or r != rewards[k]:
                raise ReplayDivergedError(
                    f"replaying env {env_index}'s recorded actions diverged at step {k} (reward {r:g} vs "
                    f"{rewards[k]:g}, elapsed_step {e} vs {elapsed[k]}): the emulator is not deterministic here"
                )
            if k >= start:
                yield obs[0]
            if k + 1 < stop:
                env.send(np.asarray([actions[k]], np.int32), info["env_id"])
