"""The envpool backend: Atari pixels, Atari RAM, classic control, MiniGrid's views flattened, Procgen's images.

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

(``import envpool`` below is the envpool package: imports are absolute.)
"""

from __future__ import annotations

import ctypes
import difflib
import importlib
import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dqnfast.config import ConfigError, EnvsConfig, ProtocolConfig
from dqnfast.config.resolve import available_cores
from dqnfast.envs.core import EnvCreationError, EnvSpec

__all__ = [
    "CLASSIC_CONTROL",
    "REPLAY_KEYS",
    "atari_games",
    "frame_shape",
    "load_suite",
    "make_env",
    "make_replay_env",
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


def resolve_game(game: str, envs: EnvsConfig | None = None) -> tuple[str, str]:
    """``_resolve_name``'s ``(task_id, family)`` of ``game``, with ``envs.make_kwargs`` (envs: the ``envs``
    section, where given) checked against the task's envpool settings (ConfigError, ``envpool_settings``)."""
    found = _resolve_name(game)
    envpool_settings(*found, envs)
    return found


def _resolve_name(game: str) -> tuple[str, str]:
    """Maps a game name to ``(task_id, family)``, family ``"atari"``, ``"classic"`` or ``"envpool_image"``.

    Accepts short names (``Pong``, ``CartPole``), any letter case, and full task ids
    (``Pong-v5``, ``CartPole-v1``); any other envpool id with discrete actions and a flat
    vector observation (``LunarLander-v3``) runs as classic control does, one with uint8
    CxHxW images (Procgen's ``StarpilotEasy-v0``) as family ``envpool_image``. Raises ValueError
    (one line) listing the closest valid names when the game is unknown, or saying why an
    envpool env of another suite cannot be trained.
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
    other = _other_suite_id(name)
    if other is not None:
        return _check_other_suite(other)
    valid = atari + list(CLASSIC_CONTROL)
    lower = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(key.split("-v")[0], list(lower), n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(lower[c] for c in close)}?" if close else "no close match"
    raise ValueError(
        f"unknown game {name!r}; {hint} (valid: {len(atari)} Atari games such as Pong, Breakout, "
        f"SpaceInvaders, {', '.join(CLASSIC_CONTROL)}, envpool's other discrete-action vector envs such as "
        "LunarLander-v3, or any Gymnasium id as gym:<id>)"
    )


def _other_suite_id(name: str) -> str | None:
    """The envpool id of ``name`` (any case) among envpool's suites other than Atari, or None."""
    import envpool  # most of a second of imports: only where envs are listed or made

    all_ids = envpool.list_all_envs()
    if name in all_ids:  # some ids differ only in case (Highway-v0, highway-v0): the exact one first
        return name
    return {t.lower(): t for t in all_ids}.get(name.lower())


def _check_other_suite(task_id: str) -> tuple[str, str]:
    """``(task_id, family)`` of an envpool env of another suite the trainer takes: discrete actions and a
    flat vector observation (Box2D's LunarLander, MiniGrid's flattened view: family ``classic``, trained
    as classic control is) or uint8 images CxHxW (Procgen: family ``envpool_image``); else ValueError in
    one line saying why (continuous or multi-discrete actions, other dicts, integer observations,
    matrices, a suite whose system library is missing). Reads envpool's spec of the task: no env is
    made (some suites, ViZDoom's, write files into the working directory when one is)."""
    import envpool  # most of a second of imports: only where envs are listed or made

    load_suite(task_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            spec = envpool.make_spec(task_id)
            act, obs = spec.action_space, spec.observation_space
    except ImportError as e:  # e.g. Procgen without the system Qt 5 runtime
        raise ValueError(f"envpool cannot load {task_id} on this machine: {' '.join(str(e).split())}") from None
    except (RuntimeError, TypeError, KeyError, ValueError) as e:  # a suite that needs options or assets
        what = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"envpool could not describe {task_id} with its defaults ({what})") from None
    kind = type(act).__name__
    if kind != "Discrete":
        raise ValueError(
            f"{task_id} has {kind} actions; dqnfast's learners take one discrete action (gymnasium.spaces.Discrete)"
        )
    shape = getattr(obs, "shape", None)
    if type(obs).__name__ == "Box" and shape is not None and len(shape) == 1:
        return task_id, "classic"
    if is_grid_view(obs):
        return task_id, "classic"
    if is_image(obs):
        return task_id, "envpool_image"
    what = (
        f"Box{tuple(shape)} {np.dtype(obs.dtype).name} observations (matrices, or images not uint8 CxHxW)"
        if type(obs).__name__ == "Box"
        else f"{type(obs).__name__} observations"
    )
    raise ValueError(
        f"{task_id} gives {what}; through envpool dqnfast takes flat vector observations of its other suites, "
        "uint8 CxHxW images (Procgen) and MiniGrid's (image, direction) views (Atari games take pixels or RAM); "
        "a Gymnasium env of the same task runs as game=gym:<id>"
    )


MAX_IMAGE_CHANNELS = 4  # RGB(A) or grey: more leading "channels" than this is a matrix stack, not an image


def is_image(space: Any) -> bool:
    """A uint8 Box of CxHxW images, channels first (C <= 4), as envpool gives Procgen's frames (3x64x64)."""
    shape = tuple(getattr(space, "shape", None) or ())
    return (
        type(space).__name__ == "Box"
        and len(shape) == 3
        and 1 <= shape[0] <= MAX_IMAGE_CHANNELS < min(shape[1:])
        and np.dtype(space.dtype) == np.uint8
    )


def frame_shape(task_id: str) -> tuple[int, ...]:
    """One observation's shape of an envpool image task (``(3, 64, 64)`` for Procgen), from envpool's spec."""
    import envpool  # most of a second of imports: only where envs are listed or made

    load_suite(task_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tuple(int(x) for x in envpool.make_spec(task_id).observation_space.shape)


# envpool's Procgen extension links the Qt 5 Core and Gui libraries (``libQt5Core.so.5``,
# ``libQt5Gui.so.5``) and envpool imports it when envpool is imported, keeping the failure where the
# system has no Qt 5. The ``procgen`` extra installs Riverbank's PyQt5-Qt5 wheel, which ships those
# libraries: loaded by path with RTLD_GLOBAL, the dynamic linker then satisfies the extension's
# dependencies by soname, and envpool's Procgen module is imported again.
QT_DISTRIBUTION = "PyQt5-Qt5"
QT_LIBRARIES = ("libQt5Core.so.5", "libQt5Gui.so.5")
_QT_HINT = (
    "pip install 'dqnfast[procgen]' (the PyQt5-Qt5 wheel's Qt 5 libraries; from a checkout: "
    "pip install -e '.[procgen]') or the system's Qt 5 (apt install libqt5gui5)"
)


def _suite_module(task_id: str) -> str | None:
    """The envpool module that defines ``task_id`` (``envpool.procgen``), or None when envpool's registry
    does not say."""
    try:
        from envpool.registration import registry  # envpool's own module: imported with envpool

        return str(registry.specs[task_id][0])
    except (ImportError, AttributeError, KeyError, IndexError, TypeError):
        return None


def qt_library_dir() -> Path | None:
    """The folder of the installed PyQt5-Qt5 wheel's Qt 5 libraries, or None where it is not installed."""
    try:
        dist = importlib.metadata.distribution(QT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == QT_LIBRARIES[0]:
            return Path(dist.locate_file(f)).parent
    return None


def load_suite(task_id: str) -> None:
    """Makes the envpool suite of ``task_id`` loadable: for Procgen without the system's Qt 5, the
    PyQt5-Qt5 wheel's libraries are loaded and envpool's Procgen module imported again. ValueError (one
    line, naming the fix) where neither is there."""
    if _suite_module(task_id) != "envpool.procgen":
        return
    import envpool.procgen as procgen  # imported with envpool; its Qt import error is kept on the module

    if getattr(procgen, "_PROCGEN_IMPORT_ERROR", None) is None:
        return
    libs = qt_library_dir()
    if libs is None:
        raise ValueError(f"envpool's Procgen ({task_id}) needs the Qt 5 runtime, which is missing: {_QT_HINT}")
    try:
        for name in QT_LIBRARIES:
            ctypes.CDLL(str(libs / name), mode=ctypes.RTLD_GLOBAL)
        importlib.reload(procgen)
    except (OSError, ImportError) as e:
        what = " ".join(str(e).split())
        raise ValueError(
            f"envpool's Procgen ({task_id}) could not load Qt 5 from {libs} ({what}): {_QT_HINT}"
        ) from None
    if getattr(procgen, "_PROCGEN_IMPORT_ERROR", None) is not None:
        what = " ".join(str(procgen._PROCGEN_IMPORT_ERROR).split())
        raise ValueError(f"envpool's Procgen ({task_id}) still cannot load Qt 5 ({what}): {_QT_HINT}")


# MiniGrid and BabyAI through envpool observe a dict: the agent's 7x7 view as (object, colour, state)
# codes, ``image`` uint8[7, 7, 3]; its facing, ``direction`` in 0..3; and the instruction as bytes,
# ``mission``. dqnfast's documented flattening, float32[7 * 7 * 3 + 4]: the view's codes as numbers,
# then the direction one-hot. The mission is dropped: a task whose instruction changes from episode
# to episode (BabyAI, GoToDoor, Fetch, ...) trains without it (docs/environments.md).
GRID_DIRECTIONS = 4


def is_grid_view(space: Any) -> bool:
    """A MiniGrid-style dict observation space (``image`` Box HxWxC uint8, ``direction`` Discrete(4))."""
    spaces = getattr(space, "spaces", None)
    if type(space).__name__ != "Dict" or not spaces or "image" not in spaces or "direction" not in spaces:
        return False
    image, direction = spaces["image"], spaces["direction"]
    return len(getattr(image, "shape", ()) or ()) == 3 and int(getattr(direction, "n", 0)) == GRID_DIRECTIONS


def flatten_grid_view(obs: dict) -> np.ndarray:
    """float32[K, H * W * C + 4]: the view's codes, then the direction one-hot (``is_grid_view`` observations)."""
    image = np.asarray(obs["image"])
    k = image.shape[0]
    direction = np.asarray(obs["direction"]).astype(np.int64).reshape(k)
    out = np.zeros((k, int(np.prod(image.shape[1:])) + GRID_DIRECTIONS), np.float32)
    out[:, :-GRID_DIRECTIONS] = image.reshape(k, -1)
    out[np.arange(k), out.shape[1] - GRID_DIRECTIONS + direction] = 1.0
    return out


class GridViewEnv:
    """An envpool MiniGrid/BabyAI batch whose observations come flattened (``flatten_grid_view``); everything
    else is the envpool env's own."""

    def __init__(self, env: Any) -> None:
        import gymnasium

        self.env = env
        image = env.observation_space.spaces["image"]
        size = int(np.prod(image.shape)) + GRID_DIRECTIONS
        self.observation_space = gymnasium.spaces.Box(0.0, 255.0, (size,), np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, *args: Any, **kwargs: Any) -> tuple:
        obs, info = self.env.reset(*args, **kwargs)
        return flatten_grid_view(obs), info

    def step(self, *args: Any, **kwargs: Any) -> tuple:
        obs, *rest = self.env.step(*args, **kwargs)
        return (flatten_grid_view(obs), *rest)

    def recv(self, *args: Any, **kwargs: Any) -> tuple:
        obs, *rest = self.env.recv(*args, **kwargs)
        return (flatten_grid_view(obs), *rest)


# envpool settings dqnfast makes itself, each with the tail of its refusal: the key that sets it, or why not
_OWN_SETTINGS = {
    "env_type": " (the trainer's interface)",
    "num_envs": ": use envs.num_envs",
    "batch_size": ": use envs.batch_size",
    "num_threads": ": use envs.num_threads",
    "seed": ": use seed",
    "env_seed": ": use seed",
    "gym_reset_return_info": " (the trainer's interface)",
    "channel_first": " (images are taken channels first)",
}
_FRAMES_84_GREY = " (the agent's frames are 84x84 grey; videos are full-size colour)"
_ATARI_SETTINGS = {
    "episodic_life": ": use envs.train.episodic_life / envs.eval.episodic_life",
    "reward_clip": ": use envs.train.reward_clip / envs.eval.reward_clip",
    "noop_max": ": use envs.train.noop_max / envs.eval.noop_max",
    "repeat_action_probability": ": use envs.train.repeat_action_probability / envs.eval.repeat_action_probability",
    "max_episode_steps": ": use envs.train.max_episode_steps / envs.eval.max_episode_steps",
    "frame_skip": ": use envs.frame_skip",
    "stack_num": ": use envs.stack",
    "img_height": _FRAMES_84_GREY,
    "img_width": _FRAMES_84_GREY,
    "gray_scale": _FRAMES_84_GREY,
}


def envpool_settings(task_id: str, family: str, envs: EnvsConfig | None) -> dict[str, Any]:
    """``envs.make_kwargs`` for ``envpool.make`` of ``task_id`` (Procgen's ``num_levels``, ``start_level``,
    ``distribution_mode``, ``paint_vel_info``, ...; Atari's ``full_action_space``, ``mode``, ...).

    Raises ConfigError (key ``envs.make_kwargs``, one line) for a setting the task does not have (listing
    those it has) or one dqnfast sets from its own key (naming it)."""
    given = dict(getattr(envs, "make_kwargs", None) or {})
    if not given:
        return {}
    import envpool  # most of a second of imports: only where envs are listed or made

    load_suite(task_id)
    own = {**_OWN_SETTINGS, **(_ATARI_SETTINGS if family == "atari" else {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        known = [k for k in envpool.make_spec(task_id)._config_keys if k not in own]
    for key in given:
        if key in own:
            raise ConfigError("envs.make_kwargs", f"{key} is dqnfast's to set for envpool{own[key]}")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                "envs.make_kwargs", f"envpool's {task_id} has no setting {key!r}; {hint}it has: {', '.join(known)}"
            )
    return given


def _threads(n: int | None) -> int:
    """A given thread count, or one per core this process may use."""
    return int(n) if n else available_cores()


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
    import envpool  # most of a second of imports: only where envs are listed or made

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
    if family == "envpool_image":
        try:
            load_suite(task_id)
        except ValueError as e:
            raise EnvCreationError(str(e)) from None
        # envpool seeds the envs of a Procgen batch its own way, not seed + i as Atari's: each env's seed is
        # given, so that env i plays as a one-env env seeded seed + i does (a video re-plays it that way)
        kwargs["env_seed"] = [int(seed) + i for i in range(n)]
    kwargs.update(envpool_settings(task_id, family, envs))
    with warnings.catch_warnings():  # gymnasium's float64 -> float32 Box notice for classic control
        warnings.simplefilter("ignore", UserWarning)
        try:
            env = envpool.make(task_id, **kwargs)
        except (RuntimeError, MemoryError, TypeError, KeyError) as e:
            raise _creation_error(e, task_id, n, kwargs["num_threads"]) from e
        if is_grid_view(env.observation_space):
            env = GridViewEnv(env)
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
    elif family == "envpool_image":  # one CxHxW frame per observation, stored whole (no frame stack)
        shape = tuple(obs_space.shape)
        spec = EnvSpec(task_id, family, "image", shape, np.dtype(np.uint8), 1, shape, num_actions, 1, n, b)
    else:
        shape = tuple(obs_space.shape)
        spec = EnvSpec(task_id, family, "vector", shape, np.dtype(obs_space.dtype), 1, shape, num_actions, 1, n, b)
    return env, spec


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
    # Procgen's
    "num_levels",
    "start_level",
    "use_sequential_levels",
    "center_agent",
    "use_backgrounds",
    "use_monochrome_assets",
    "restrict_themes",
    "use_generated_assets",
    "paint_vel_info",
    "use_easy_jump",
    "distribution_mode",
)


def make_replay_env(task_id: str, config: dict, env_index: int, **override: Any) -> Any:
    """A fresh one-env envpool env that plays as env ``env_index`` of a batch built with ``config``.

    config: that batch's ``env.config`` (its ``seed`` is the batch's base seed; envpool seeds
    env i of an Atari batch with seed + i; a batch made with ``env_seed``, Procgen's, names each env's seed). Every ``REPLAY_KEYS`` setting is copied; override: other envpool
    kwargs (a colour screen for videos).
    """
    import envpool  # most of a second of imports: only where envs are listed or made

    load_suite(task_id)
    kw = {k: config[k] for k in REPLAY_KEYS if k in config}
    seed = int(config["seed"]) + int(env_index)
    kw.update(env_type="gymnasium", num_envs=1, batch_size=1, num_threads=1, seed=seed)
    if config.get("env_seed"):  # a batch made with each env's seed (Procgen): this env's
        kw["env_seed"] = [int(config["env_seed"][env_index])]
    kw.update(override)
    with warnings.catch_warnings():  # gymnasium's float64 -> float32 Box notice for classic control
        warnings.simplefilter("ignore", UserWarning)
        return envpool.make(task_id, **kw)
