"""Building envpool environments from config: Atari pixels, Atari RAM, classic control.

A *game* is named the way people say it (``Pong``, ``SpaceInvaders``, ``CartPole``);
``resolve_game`` maps it to envpool's task id (``Pong-v5``, ``CartPole-v1``) or fails
at once, in one line, with the closest valid names. ``make_env`` builds the batched
env for the training or the evaluation protocol and returns an ``EnvSpec`` that says
what the replay ring and the network must hold.

Facts this module relies on (envpool 1.2.5; see DESIGN.md and tests/test_envs.py):

* Atari obs are uint8[N, 4, 84, 84] (stack 4, frame_skip 4, grayscale);
  ``info["ram"]`` is uint8[N, 128], ``info["lives"]`` int32[N],
  ``info["reward"]`` the *unclipped* reward even with ``reward_clip=True``.
* Autoreset is next-step: the step after ``terminated | truncated`` (at game over)
  ignores its action and returns a new episode's first obs, reward 0,
  ``info["elapsed_step"] == 0``. With ``episodic_life=True`` a life loss is
  ``terminated=True`` but the game continues (no reset step follows).
* ``send``/``recv`` return ``info["env_id"]``; results are keyed by it.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from dqnfast.config import EnvsConfig, ProtocolConfig
from dqnfast.config.resolve import available_cores

__all__ = [
    "ActionLog",
    "CLASSIC_CONTROL",
    "EnvCreationError",
    "EnvSpec",
    "GameTracker",
    "REPLAY_KEYS",
    "ReplayDivergedError",
    "atari_games",
    "frames_of",
    "make_env",
    "make_replay_env",
    "observation_of",
    "raw_reward_of",
    "resolve_game",
]

# Short name -> envpool task id of the classic-control tasks we support.
CLASSIC_CONTROL = {"CartPole": "CartPole-v1", "Acrobot": "Acrobot-v1", "MountainCar": "MountainCar-v0"}


def atari_games() -> list[str]:
    """Short names of every Atari game envpool ships (``Pong``, ``SpaceInvaders``, ...)."""
    import envpool  # most of a second of imports: only where envs are listed or made

    ids = envpool.list_all_envs()
    try:
        from envpool.registration import registry  # envpool's own module: imported with envpool above

        atari = {t for t, entry in registry.specs.items() if entry[0] == "envpool.atari"}
    except (ImportError, AttributeError):  # registry layout changed: every *-v5 id is Atari
        atari = set(ids)
    return sorted(t[: -len("-v5")] for t in ids if t in atari and t.endswith("-v5"))


def resolve_game(game: str) -> tuple[str, str]:
    """Maps a game name to ``(task_id, family)``, family ``"atari"`` or ``"classic"``.

    Accepts short names (``Pong``, ``CartPole``), any letter case, and full task ids
    (``Pong-v5``, ``CartPole-v1``). Raises ValueError (one line) listing the closest
    valid names when the game is unknown.
    """
    name = str(game).strip()
    atari = atari_games()
    table: dict[str, tuple[str, str]] = {}
    for g in atari:
        table[g.lower()] = (f"{g}-v5", "atari")
        table[f"{g}-v5".lower()] = (f"{g}-v5", "atari")
    for short, tid in CLASSIC_CONTROL.items():
        table[short.lower()] = (tid, "classic")
        table[tid.lower()] = (tid, "classic")
    key = name.lower().replace("_", "").replace(" ", "")
    if key in table:
        return table[key]
    valid = atari + list(CLASSIC_CONTROL)
    lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(key.split("-v")[0], list(lower), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(lower[c] for c in close)}?" if close else "no close match"
    raise ValueError(
        f"unknown game {name!r}; {hint} (valid: {len(atari)} Atari games such as Pong, Breakout, "
        f"SpaceInvaders, or {', '.join(CLASSIC_CONTROL)})"
    )


@dataclass(frozen=True)
class EnvSpec:
    """What a built env produces, for the ring and the network.

    task_id: envpool id (``Pong-v5``). family: ``atari`` | ``classic``.
    obs_kind: ``pixels`` | ``ram`` | ``vector``. frame_shape / frame_dtype: one stored
    frame (``(84, 84)`` uint8, ``(128,)`` uint8, ``(4,)`` float32). stack: frames per
    observation (4 for pixels, else 1). obs_shape: what the network sees
    (``(4, 84, 84)``, ``(128,)``, ``(4,)``). num_actions: discrete actions.
    frame_skip: emulator frames per agent step (1 for classic control).
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


def _threads(n: int | None) -> int:
    """A given thread count, or one per core this process may use."""
    return int(n) if n else available_cores()


class EnvCreationError(RuntimeError):
    """envpool could not create the envs; the message is one line: what failed and what to change."""


def _creation_error(e: BaseException, task_id: str, n: int, threads: int) -> EnvCreationError:
    """One line for an ``envpool.make`` failure: threads, memory or an env option, with the fix."""
    what = " ".join(str(e).split()) or type(e).__name__
    low = what.lower()
    if "resource temporarily unavailable" in low or "thread" in low:
        hint = (
            f"could not start its {threads} threads (the machine is out of threads or processes): "
            "lower envs.num_threads / envs.num_envs, or wait for other jobs to finish"
        )
    elif isinstance(e, MemoryError) or "alloc" in low or "memory" in low:
        hint = f"out of memory for {n} envs: lower envs.num_envs or free memory"
    elif isinstance(e, (TypeError, KeyError)) or "config" in low or "key" in low:
        hint = "an env option this envpool version does not know: check envpool's version"
    else:
        hint = "see the envpool message"
    return EnvCreationError(f"envpool could not create {n} {task_id} envs: {hint} ({what})")


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
    """Builds a gymnasium-style envpool env and its EnvSpec.

    game: a name ``resolve_game`` accepts. obs: ``pixels`` | ``ram`` (Atari only;
    classic control always gives float32 vectors). envs: the ``envs`` config
    section (threads, frame skip, stack). protocol: ``envs.train`` or ``envs.eval``
    (Atari only). num_envs / batch_size override the section's (for evaluation).
    task: ``game`` already resolved, ``(task_id, family)`` (``dqnfast.config.resolve.Resolved.game``).
    Raises EnvCreationError (one line) when envpool cannot create them.
    """
    import envpool  # most of a second of imports: only where envs are made

    task_id, family = task or resolve_game(game)
    n = int(num_envs or envs.num_envs)
    b = int(batch_size or envs.batch_size or n)
    b = min(b, n)
    kwargs: dict[str, Any] = dict(
        env_type="gymnasium", num_envs=n, batch_size=b, num_threads=min(_threads(envs.num_threads), n), seed=int(seed)
    )
    if family == "atari":
        if obs not in ("pixels", "ram"):
            raise ValueError(f"obs must be pixels or ram for Atari, got {obs!r}")
        kwargs.update(
            episodic_life=bool(protocol.episodic_life),
            reward_clip=bool(protocol.reward_clip),
            noop_max=int(protocol.noop_max),
            repeat_action_probability=float(protocol.repeat_action_probability),
            max_episode_steps=int(protocol.max_episode_steps),
            frame_skip=int(envs.frame_skip),
            stack_num=int(envs.stack),
        )
    with warnings.catch_warnings():  # gymnasium's float64 -> float32 Box notice for classic control
        warnings.simplefilter("ignore", UserWarning)
        try:
            env = envpool.make(task_id, **kwargs)
        except (RuntimeError, MemoryError, TypeError, KeyError) as e:
            raise _creation_error(e, task_id, n, kwargs["num_threads"]) from e
        obs_space = env.observation_space
    num_actions = int(env.action_space.n)
    if family == "atari" and obs == "pixels":
        shape = tuple(obs_space.shape)  # (stack, 84, 84)
        spec = EnvSpec(
            task_id,
            family,
            "pixels",
            shape[1:],
            np.dtype(np.uint8),
            shape[0],
            shape,
            num_actions,
            int(envs.frame_skip),
            n,
            b,
        )
    elif family == "atari":
        spec = EnvSpec(
            task_id, family, "ram", (128,), np.dtype(np.uint8), 1, (128,), num_actions, int(envs.frame_skip), n, b
        )
    else:
        shape = tuple(obs_space.shape)
        spec = EnvSpec(task_id, family, "vector", shape, np.dtype(obs_space.dtype), 1, shape, num_actions, 1, n, b)
    return env, spec


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


# env.config keys that define a game, its protocol and its observations: a replay env copies them
REPLAY_KEYS = (
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
    "img_height",
    "img_width",
    "gray_scale",
    "stack_num",
)


def make_replay_env(task_id: str, config: dict, env_index: int, **override: Any) -> Any:
    """A fresh one-env envpool env that plays as env ``env_index`` of a batch built with ``config``.

    config: that batch's ``env.config`` (its ``seed`` is the batch's base seed; envpool seeds
    env i with seed + i). Every ``REPLAY_KEYS`` setting is copied; override: other envpool
    kwargs (a colour screen for videos).
    """
    import envpool  # most of a second of imports: only where envs are made

    kw = {k: config[k] for k in REPLAY_KEYS if k in config}
    kw.update(env_type="gymnasium", num_envs=1, batch_size=1, num_threads=1, seed=int(config["seed"]) + int(env_index))
    kw.update(override)
    with warnings.catch_warnings():  # gymnasium's float64 -> float32 Box notice for classic control
        warnings.simplefilter("ignore", UserWarning)
        return envpool.make(task_id, **kw)


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
