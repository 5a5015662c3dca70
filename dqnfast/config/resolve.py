"""The one place where a config's ``auto``/null values become concrete.

The game (envpool's task id and family), the observation kind, the network's architecture,
device, cores (from this process's CPU affinity mask, which SLURM, taskset and
container runtimes restrict), threads (envpool, replay sampler, torch), compile mode,
autocast dtype, pinned buffers. Every other module receives the concrete values and
never re-parses a config string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from dqnfast.agent.networks import check_fits, network_kind
from dqnfast.config.schema import (
    Amp,
    AutoBool,
    CompileMode,
    Config,
    ConfigError,
    LearnerName,
    NetworkName,
    ObsKind,
    Storage,
)

__all__ = [
    "Resolved",
    "MAX_THREADS",
    "MAX_THREADS_PER_CORE",
    "available_cores",
    "check_thread_counts",
    "job_cores",
    "max_threads",
    "observation_kind",
    "resolve",
    "resolve_amp",
    "resolve_compile",
    "resolve_device",
    "share_cores",
    "thread_counts",
    "uses_cudagraphs",
]

CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
# A thread count is refused above MAX_THREADS_PER_CORE x the cores of the affinity mask, and
# above MAX_THREADS in any case. envpool's workers, the replay sampler's and torch's OpenMP
# threads all compute: beyond the cores they only take turns on them (torch's spinning
# workers slow down by up to 10x), so 4 per core leaves room for a deliberately
# oversubscribed experiment and catches a typo. Each thread also reserves a stack (8 MiB of
# address space by default) and counts against the process and cgroup limits (ulimit -u,
# pids.max); the OS refusing thread 10,000 is found out as a hang or a crash, not an error.
MAX_THREADS_PER_CORE = 4
MAX_THREADS = 1024


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: SLURM and taskset restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads(cores: int) -> int:
    """The most threads a config may ask for, for each of envpool, the sampler and torch."""
    return min(MAX_THREADS, MAX_THREADS_PER_CORE * max(1, int(cores)))


def check_thread_counts(cfg: Config, cores: int) -> None:
    """Refuses, in one line, an explicit thread count above ``max_threads(cores)`` (null/0: the default)."""
    limit = max_threads(cores)
    for key, n in (
        ("envs.num_threads", cfg.envs.num_threads),
        ("replay.num_threads", cfg.replay.num_threads),
        ("torch_threads", cfg.torch_threads),
    ):
        if n and n > limit:
            raise ConfigError(
                key,
                f"{n} threads is more than this machine can run: at most {limit} ({MAX_THREADS_PER_CORE} per core "
                f"of the {cores} this process may use, {MAX_THREADS} in all); use null for the default",
            )


def resolve_device(name: Any):
    """``auto`` -> cuda if available else cpu. Raises ConfigError("device") if unusable."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError("device", f"{name!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} asked for but CUDA is not available; use device=auto or cpu")
    return dev


def resolve_compile(mode: Any, device: Any) -> str | None:
    """How the update runs: None = eager, else the ``torch.compile`` mode.

    mode: a ``CompileMode`` (what a validated config holds) or its value (a bool too, from a
    library caller). ``auto``: ``reduce-overhead`` (compiled, replayed as CUDA graphs) on
    CUDA, eager on the CPU (compiling takes longer than a short CPU run gains); ``true`` =
    ``default``; ``false`` = eager; any other value is a torch.compile mode.
    """
    mode = CompileMode.parse(mode, "algo.compile")
    if mode == CompileMode.auto:
        return "reduce-overhead" if torch.device(device).type == "cuda" else None
    if mode == CompileMode.false:
        return None
    return "default" if mode == CompileMode.true else mode.value


def uses_cudagraphs(compile_mode: str | None) -> bool:
    """Whether a torch.compile mode replays CUDA graphs (on CUDA tensors)."""
    return compile_mode in CUDAGRAPH_MODES


def resolve_amp(amp: Any):
    """``none`` -> None (fp32); ``bf16`` -> torch.bfloat16. amp: an ``Amp`` or its value (ValueError otherwise)."""
    return torch.bfloat16 if Amp.parse(amp, "algo.amp") == Amp.bf16 else None


def thread_counts(
    cores: int, *, cpu: bool, envs: int | None = None, sampler: int | None = None, torch_threads: int | None = None
) -> tuple[int, int, int | None]:
    """(envpool, sampler, torch) threads for ``cores`` cores; a given (non-zero) count is kept.

    On the CPU torch gets half the cores: its spinning OpenMP workers and busy envpool
    workers on the same cores slow updates down by up to 10x. On CUDA torch keeps its
    default (None) unless a share of a machine was given (``share_cores``).
    """
    return (envs or cores, sampler or cores, torch_threads or (max(1, cores // 2) if cpu else None))


def job_cores(launcher: Mapping[str, Any] | None, available: int) -> int | None:
    """Cores one job of a Hydra multirun may use, from its launcher's config; None = all of them.

    joblib runs ``n_jobs`` jobs at once on this machine (joblib's meaning: -1 = one per
    core, -k = cores + 1 - k), so each gets ``available // n_jobs`` (at least 1). Ray
    gives a job ``ray.remote.num_cpus``, submitit/SLURM ``cpus_per_task`` (when set).
    The basic launcher runs one job at a time: None.
    """
    if not launcher:
        return None
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n = launcher.get("n_jobs")
        n = 1 if n is None else int(n)
        if n < 0:
            n = max(1, available + 1 + n)
        return max(1, available // max(n, 1))
    if "hydra_ray_launcher" in target:
        n = ((launcher.get("ray") or {}).get("remote") or {}).get("num_cpus")
        return max(1, int(n)) if n else None
    if "hydra_submitit_launcher" in target:
        n = launcher.get("cpus_per_task")
        return max(1, int(n)) if n else None
    return None


def share_cores(cfg: Config, config_dict: dict, cores: int) -> str:
    """Sizes the threads left at null/0 to ``cores``: envpool, replay sampling, torch (half on CPU).

    For a job given a share of a machine. Updates ``cfg`` and ``config_dict`` (what the
    checkpoint and W&B record); returns a description for the log.
    """
    cpu = resolve_device(cfg.device).type == "cpu"
    envs, sampler, torch_threads = thread_counts(
        cores, cpu=cpu, envs=cfg.envs.num_threads, sampler=cfg.replay.num_threads, torch_threads=cfg.torch_threads
    )
    cfg.envs.num_threads, cfg.replay.num_threads = envs, sampler
    cfg.torch_threads = torch_threads or cores
    config_dict.setdefault("envs", {})["num_threads"] = cfg.envs.num_threads
    config_dict.setdefault("replay", {})["num_threads"] = cfg.replay.num_threads
    config_dict["torch_threads"] = cfg.torch_threads
    return f"envpool {cfg.envs.num_threads}, sampler {cfg.replay.num_threads}, torch {cfg.torch_threads}"


@dataclass(frozen=True)
class Resolved:
    """A run's concrete settings, from its validated Config and this process: resolved once per run
    (``resolve``) and handed to every part that needs one of them.

    task_id: envpool's id of the game (``Pong-v5``). family: ``atari`` | ``classic``.
    obs_kind: what the network sees, ``pixels`` | ``ram`` | ``vector`` (classic control).
    network: the architecture, ``NetworkName.nature`` or ``NetworkName.mlp`` (``auto`` resolved).
    device: torch.device. cores: the affinity mask's size. env_threads, sampler_threads:
    envpool and replay sampling threads. torch_threads: torch's CPU threads (None: torch's
    default). compile_mode: None (eager) or a torch.compile mode. amp_dtype: autocast dtype
    or None. frames_on_device: replay frames live on the GPU. pin_memory: sample into
    pinned host buffers.
    """

    task_id: str
    family: str
    obs_kind: str
    network: NetworkName
    device: Any
    cores: int
    env_threads: int
    sampler_threads: int
    torch_threads: int | None
    compile_mode: str | None
    amp_dtype: Any
    frames_on_device: bool
    pin_memory: bool

    @property
    def game(self) -> tuple[str, str]:
        """(task_id, family), as ``dqnfast.envs.resolve_game`` gives them: what ``make_env`` takes as ``task``."""
        return self.task_id, self.family


def observation_kind(family: str, obs: ObsKind) -> str:
    """What the network sees: the config's ``obs`` for an Atari game, ``image`` for a Gymnasium game with image
    observations, ``vector`` otherwise."""
    if family == "atari":
        return ObsKind.of(obs).value
    return "image" if family == "gym_image" else "vector"


def _game(cfg: Config) -> tuple[str, str, str]:
    """(task_id, family, observation kind); ConfigError for an unknown game, or a learner or obs it cannot have."""
    # looked up at each call (tests count the resolutions on its module); and envs imports this module
    from dqnfast.envs import resolve_game

    try:
        task_id, family = resolve_game(cfg.game, cfg.envs)
    except ConfigError:  # envs.import / envs.make_kwargs of a Gymnasium game: the key it names
        raise
    except ValueError as e:
        raise ConfigError("game", str(e)) from None
    if cfg.learner == LearnerName.reinforce and family != "classic":
        raise ConfigError(
            "learner", f"reinforce plays envpool's classic control only (CartPole, Acrobot, ...), not {task_id}"
        )
    if family != "atari" and cfg.obs == ObsKind.ram:
        raise ConfigError("obs", f"{task_id} has vector observations; obs=ram is for Atari games")
    return task_id, family, observation_kind(family, cfg.obs)


def _network(cfg: Config, obs_kind: str) -> NetworkName:
    """The architecture ``network.name`` gives; ConfigError when it cannot take the observations."""
    kind = network_kind(cfg.network.name, obs_kind)
    shape = {ObsKind.pixels: (cfg.envs.stack, 84, 84), ObsKind.ram: (128,)}.get(obs_kind)  # vector: the env's
    try:
        check_fits(kind, obs_kind, shape)
    except ValueError as e:
        raise ConfigError("network.name", str(e)) from None
    return kind


def _pin_memory(mode: AutoBool, device: Any) -> bool:
    """replay.pin_memory: auto = when training on CUDA; true = when CUDA is there to pin for."""
    if mode == AutoBool.auto:
        return device.type == "cuda"
    return mode == AutoBool.true and torch.cuda.is_available()


def resolve(cfg: Config) -> Resolved:
    """Every auto/null of a validated ``cfg`` made concrete: the game, the observations, the network, the
    device, the threads, the precision, the compile mode.

    Raises ConfigError naming the key: ``game`` (unknown, with the closest names), ``learner``
    (reinforce on an Atari game), ``obs`` (ram for classic control), ``network.name`` (a network
    that cannot take the observations), ``device`` (unusable), ``replay.storage`` (cuda without
    a CUDA device).
    """
    task_id, family, obs_kind = _game(cfg)
    network = _network(cfg, obs_kind)
    device = resolve_device(cfg.device)
    cores = available_cores()
    envs, sampler, torch_threads = thread_counts(
        cores,
        cpu=device.type == "cpu",
        envs=cfg.envs.num_threads,
        sampler=cfg.replay.num_threads,
        torch_threads=cfg.torch_threads,
    )
    on_device = cfg.replay.storage == Storage.cuda
    if on_device and device.type != "cuda":
        raise ConfigError(
            "replay.storage", f"cuda storage needs a CUDA device, but this run is on {device}; use replay.storage=cpu"
        )
    return Resolved(
        task_id=task_id,
        family=family,
        obs_kind=obs_kind,
        network=network,
        device=device,
        cores=cores,
        env_threads=envs,
        sampler_threads=sampler,
        torch_threads=torch_threads,
        compile_mode=resolve_compile(cfg.algo.compile, device),
        amp_dtype=resolve_amp(cfg.algo.amp),
        frames_on_device=on_device,
        # device frames: the ring stages its small host arrays itself
        pin_memory=_pin_memory(cfg.replay.pin_memory, device) and not on_device,
    )
