"""The Gymnasium backend: any registered id as ``game=gym:<id>``, run as a Gymnasium vector env.

The id must have a ``Discrete`` action space and a ``Box`` observation space. ``GymBatch`` gives
the vector env the batched interface of ``dqnfast.envs.core`` (envpool's), so the training loop,
the replay ring and the evaluation see what they see from envpool:

* every ``recv`` returns all N envs (``info["env_id"] = 0..N-1``): a Gymnasium vector env steps
  its envs together (``envs.vectorization=async`` steps them in subprocesses while the learner
  updates, as envpool's threads do);
* ``info["elapsed_step"]`` is counted here: 0 at a reset, +1 per step;
* autoreset is next-step, Gymnasium's default (``AutoresetMode.NEXT_STEP``: the step after
  ``terminated | truncated`` ignores its action and returns the new episode's first observation,
  reward 0): envpool's rule, so the reset step arrives flagged ``elapsed_step == 0`` with reward 0
  and the ring never learns it. A vector env in another mode (a registered id can ask for
  ``SAME_STEP`` or ``DISABLED``) is refused in one line.

Observations (``layout``): float (or integer) boxes are float32 vectors (flattened), uint8
vectors stay uint8 (scaled by 1/255 in the network, as Atari RAM); uint8 or bool images HxW
or HxWxC become ``image`` frames CxHxW (HxW: C = 1) stored whole, one frame per observation
(no frame stack: the observation is the state, as MinAtar's); bool becomes uint8 0/255 so the
network's 1/255 scaling gives exactly 0/1.

Seeds: env i is reset with ``seed + i`` once (``reset(seed=seed)``); later episodes draw from
the env's own seeded generator, so an env deterministic for its seed re-plays exactly from
the recorded actions (``envs.resume=replay``); one that is not is resumed with new seeds
(``envs.resume=reseed``, the default).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import math
import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from dqnfast.config import ConfigError, EnvsConfig
from dqnfast.envs import GYM_PREFIX
from dqnfast.envs.core import EnvCreationError, EnvSpec, EnvStepError

__all__ = ["GymBatch", "Layout", "import_modules", "layout", "make_env", "resolve"]

# Extras that install a Gymnasium namespace's package, for the one-line hint of an unknown id.
_NAMESPACE_PACKAGES = {"MinAtar": "minatar (pip install -e '.[minatar]')"}


def import_modules(envs: EnvsConfig | None) -> None:
    """Imports ``envs.import`` (a module that registers the user's env); ConfigError naming the key when it fails."""
    name = getattr(envs, "import", None) if envs is not None else None
    if not name:
        return
    try:
        importlib.import_module(str(name))
    except Exception as e:  # any error of the user's module: its type and message, in one line
        msg = " ".join(str(e).split())
        raise ConfigError(
            "envs.import",
            f"importing {name!r} failed ({type(e).__name__}: {msg}); give a module importable from this "
            "Python (on sys.path / PYTHONPATH) that registers the env with gymnasium.register",
        ) from None


def _make_kwargs(envs: EnvsConfig | None) -> dict[str, Any]:
    return dict(getattr(envs, "make_kwargs", None) or {})


def _load_namespace(env_id: str) -> None:
    """Registers the ids of ``env_id``'s namespace (``MinAtar/...``) from the package that declares it as a
    ``gymnasium.envs`` entry point: Gymnasium 1.x no longer loads those plugins by itself."""
    if "/" not in env_id:
        return
    ns = env_id.split("/", 1)[0]
    if any(k.startswith(ns + "/") for k in gym.registry):
        return
    for ep in entry_points(group="gymnasium.envs"):
        if ep.name == ns:
            ep.load()()


def _find_spec(env_id: str) -> Any:
    """The registry's spec of ``env_id``; ValueError (one line) with the closest registered ids."""
    _load_namespace(env_id)
    try:
        return gym.spec(env_id)
    except gym.error.Error:
        pass
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join('gym:' + c for c in close)}?" if close else "no close registered id"
    ns = env_id.split("/", 1)[0] if "/" in env_id else ""
    more = f"; its namespace needs {_NAMESPACE_PACKAGES[ns]}" if ns in _NAMESPACE_PACKAGES else ""
    raise ValueError(
        f"unknown Gymnasium id {env_id!r}; {hint}{more} (a custom env: register it in a module and pass "
        "envs.import=<module>)"
    )


@dataclass(frozen=True)
class Layout:
    """How one Gymnasium observation is stored and seen: family, obs_kind (``vector`` | ``image``), the frame's
    shape and dtype, and whether to transpose HxWxC -> CxHxW, add a channel (HxW), or map bool to 0/255."""

    family: str
    obs_kind: str
    frame_shape: tuple[int, ...]
    frame_dtype: np.dtype
    channels_last: bool = False
    add_channel: bool = False
    bool_255: bool = False

    def convert(self, obs: np.ndarray) -> np.ndarray:
        """A vector env's obs [N, *space.shape] -> the stored frames [N, *frame_shape] of ``frame_dtype``."""
        n = len(obs)
        if self.obs_kind == "vector":
            x = obs.reshape(n, -1)
        elif self.channels_last:
            x = obs.transpose(0, 3, 1, 2)
        elif self.add_channel:
            x = obs[:, None]
        else:
            x = obs
        if self.bool_255:
            return np.ascontiguousarray(x, np.uint8) * np.uint8(255)
        return np.ascontiguousarray(x, self.frame_dtype)


def layout(env_id: str, observation_space: Any, action_space: Any) -> Layout:
    """The Layout of a Discrete-action, Box-observation env; ValueError (one line, key ``game``) for other spaces."""
    spaces = gym.spaces
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(
            f"gym:{env_id} has a {type(action_space).__name__} action space ({action_space}); dqnfast's "
            "learners pick one of n actions: use an env with a Discrete action space (or wrap it in one)"
        )
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"gym:{env_id} has a {type(observation_space).__name__} observation space; dqnfast takes Box "
            "observations (images or vectors): flatten it in a wrapper registered as its own id"
        )
    shape, dtype = tuple(int(s) for s in observation_space.shape), np.dtype(observation_space.dtype)
    byte_like = dtype in (np.dtype(np.uint8), np.dtype(bool))
    if byte_like and len(shape) in (2, 3):
        if len(shape) == 3:
            c, h, w = shape[2], shape[0], shape[1]
            return Layout("gym_image", "image", (c, h, w), np.dtype(np.uint8), True, False, dtype == np.dtype(bool))
        return Layout("gym_image", "image", (1, *shape), np.dtype(np.uint8), False, True, dtype == np.dtype(bool))
    if len(shape) > 3 and byte_like:
        raise ValueError(f"gym:{env_id} gives uint8 observations of shape {shape}; images are HxW or HxWxC")
    size = math.prod(shape) if shape else 1
    if byte_like:
        return Layout("gym", "vector", (size,), np.dtype(np.uint8), bool_255=dtype == np.dtype(bool))
    return Layout("gym", "vector", (size,), np.dtype(np.float32))


def resolve(env_id: str, envs: EnvsConfig | None = None) -> tuple[str, str]:
    """``(gym:<id>, family)`` for a registered id; family ``gym`` (vector obs) | ``gym_image``.

    Imports ``envs.import`` first and probes one env (made with ``envs.make_kwargs``) for its
    spaces. Raises ConfigError (``envs.import``, ``envs.make_kwargs``) or ValueError (one line:
    an unknown id with the closest registered ones, an unsupported space).
    """
    import_modules(envs)
    _find_spec(env_id)
    kwargs = _make_kwargs(envs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = gym.make(env_id, **kwargs)
    except TypeError as e:
        raise ConfigError(
            "envs.make_kwargs", f"gym.make({env_id!r}, **{kwargs}) refused them: {' '.join(str(e).split())}"
        ) from None
    except Exception as e:
        raise EnvCreationError(f"gym.make({env_id!r}) failed: {type(e).__name__}: {' '.join(str(e).split())}") from e
    try:
        lay = layout(env_id, probe.observation_space, probe.action_space)
    finally:
        probe.close()
    if lay.obs_kind == "image":
        FRAME_SHAPES[GYM_PREFIX + env_id] = lay.frame_shape
    return GYM_PREFIX + env_id, lay.family


# Each image id's frame shape, CxHxW, as ``resolve`` found it: the network's auto rule needs an image's size
# before the envs are made (``dqnfast.envs.image_shape``).
FRAME_SHAPES: dict[str, tuple[int, ...]] = {}


class _Guard(gym.Wrapper):
    """Names the env (its index in the batch: its reset seed minus the batch's) in what its step or reset raises,
    so the one-line error of a failing env says which env and what (also from a subprocess)."""

    def __init__(self, env: gym.Env, base_seed: int) -> None:
        super().__init__(env)
        self._base = int(base_seed)
        self._index: int | None = None

    def _failed(self, what: str, e: Exception) -> RuntimeError:
        where = f"env {self._index}" if self._index is not None else "an env"
        return RuntimeError(f"{where} raised in {what}: {type(e).__name__}: {' '.join(str(e).split())}")

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        if seed is not None:
            self._index = int(seed) - self._base
        try:
            return self.env.reset(seed=seed, options=options)
        except Exception as e:
            raise self._failed("reset", e) from None

    def step(self, action: Any) -> Any:
        try:
            return self.env.step(action)
        except Exception as e:
            raise self._failed("step", e) from None


class GymBatch:
    """A Gymnasium vector env behind envpool's batched interface (``dqnfast.envs.core``); see the module docstring.

    ``send`` needs every env's action at once (the vector env steps all of them); with
    ``step_async`` (``envs.vectorization=async``) the envs step between ``send`` and ``recv``.
    """

    def __init__(self, vec: Any, task_id: str, lay: Layout, seed: int, config: dict) -> None:
        self.vec = vec
        self.task_id = task_id
        self.layout = lay
        self.seed = int(seed)
        self.config = config
        self.num_envs = int(vec.num_envs)
        self._ids = np.arange(self.num_envs, dtype=np.int32)
        self._elapsed = np.zeros(self.num_envs, np.int32)
        self._ended = np.zeros(self.num_envs, bool)
        self._start = int(vec.single_action_space.start)
        self._pending: tuple | None = None
        self._stepping = False
        self._async = hasattr(vec, "step_async")

    def _error(self, e: Exception) -> EnvStepError:
        return EnvStepError(f"{self.task_id}: {' '.join(str(e).split()) or type(e).__name__}")

    def async_reset(self) -> None:
        try:
            obs, _ = self.vec.reset(seed=self.seed)
        except Exception as e:
            raise self._error(e) from e
        n = self.num_envs
        self._elapsed[:] = 0
        self._ended[:] = False
        self._pending = self._result(obs, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool))

    def _result(self, obs: np.ndarray, reward: Any, terminated: Any, truncated: Any) -> tuple:
        info = {"env_id": self._ids.copy(), "elapsed_step": self._elapsed.copy()}
        return (
            self.layout.convert(np.asarray(obs)),
            np.asarray(reward, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
            info,
        )

    def _translate(self, obs: np.ndarray, reward: Any, terminated: Any, truncated: Any) -> tuple:
        """One NEXT_STEP result -> envpool's: an env whose previous result ended is at its reset step."""
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        self._elapsed = np.where(self._ended, 0, self._elapsed + 1).astype(np.int32)
        self._ended = terminated | truncated
        return self._result(obs, reward, terminated, truncated)

    def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
        ids = np.asarray(env_id)
        if len(ids) != self.num_envs:
            raise ValueError(f"{self.task_id}: send every env's action at once ({self.num_envs}), got {len(ids)}")
        a = np.empty(self.num_envs, np.int64)
        a[ids] = np.asarray(actions, np.int64) + self._start
        try:
            if self._async:
                self.vec.step_async(a)
                self._stepping = True
            else:
                obs, reward, terminated, truncated, _ = self.vec.step(a)
                self._pending = self._translate(obs, reward, terminated, truncated)
        except Exception as e:
            raise self._error(e) from e

    def recv(self) -> tuple:
        if self._stepping:
            self._stepping = False
            try:
                obs, reward, terminated, truncated, _ = self.vec.step_wait()
            except Exception as e:
                raise self._error(e) from e
            self._pending = self._translate(obs, reward, terminated, truncated)
        if self._pending is None:
            raise RuntimeError(f"{self.task_id}: recv before async_reset or send")
        out, self._pending = self._pending, None
        return out

    def close(self) -> None:
        if self._stepping:  # an async step in flight: collect it, or the subprocesses cannot close
            self._stepping = False
            try:
                self.vec.step_wait()
            except Exception:  # closing after a failed step: the failure was reported where it happened
                pass
        self.vec.close()


def make_env(task_id: str, envs: EnvsConfig, *, seed: int, num_envs: int | None = None) -> tuple[GymBatch, EnvSpec]:
    """The batch of ``num_envs`` (or ``envs.num_envs``) Gymnasium envs of ``task_id`` (``gym:<id>``) and its EnvSpec.

    Raises ConfigError (``envs.batch_size``: Gymnasium envs step together; ``envs.import``,
    ``envs.make_kwargs``), EnvCreationError (the vector env cannot be made, or resets in a mode
    other than next-step; one line).
    """
    env_id = task_id[len(GYM_PREFIX) :]
    n = int(num_envs or envs.num_envs)
    if num_envs is None and envs.batch_size and envs.batch_size < n:
        raise ConfigError(
            "envs.batch_size",
            f"Gymnasium vector envs step all {n} envs together; leave envs.batch_size null "
            "(envs.vectorization=async steps them in subprocesses while the learner updates)",
        )
    import_modules(envs)
    _find_spec(env_id)
    mode = str(getattr(envs, "vectorization", "sync"))
    kwargs = _make_kwargs(envs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vec = gym.make_vec(
                env_id,
                num_envs=n,
                vectorization_mode=mode,
                wrappers=[functools.partial(_Guard, base_seed=seed)],
                **kwargs,
            )
    except TypeError as e:
        raise ConfigError(
            "envs.make_kwargs", f"gym.make_vec({env_id!r}, **{kwargs}) refused them: {' '.join(str(e).split())}"
        ) from None
    except Exception as e:
        raise EnvCreationError(
            f"gym.make_vec({env_id!r}, num_envs={n}, vectorization_mode={mode!r}) failed: "
            f"{type(e).__name__}: {' '.join(str(e).split())}"
        ) from e
    autoreset = vec.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if AutoresetMode(autoreset) != AutoresetMode.NEXT_STEP:
        vec.close()
        raise EnvCreationError(
            f"{task_id}'s vector env resets in {AutoresetMode(autoreset).name} mode; dqnfast's replay ring needs "
            "NEXT_STEP (Gymnasium's default): register the id without an autoreset_mode in its vector_kwargs"
        )
    try:
        lay = layout(env_id, vec.single_observation_space, vec.single_action_space)
    except ValueError as e:
        vec.close()
        raise ConfigError("game", str(e)) from None
    config = {"task_id": task_id, "seed": int(seed), "num_envs": n, "vectorization": mode, "make_kwargs": kwargs}
    spec = EnvSpec(
        task_id,
        lay.family,
        lay.obs_kind,
        lay.frame_shape,
        lay.frame_dtype,
        1,
        lay.frame_shape,
        int(vec.single_action_space.n),
        1,
        n,
        n,
    )
    return GymBatch(vec, task_id, lay, seed, config), spec
