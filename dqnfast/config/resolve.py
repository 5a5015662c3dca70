"""The one place where a config's ``auto``/null values become concrete.

The game (envpool's task id and family), the observation kind, the network's architecture,
device, cores (from this process's CPU affinity mask, which SLURM, taskset and
container runtimes restrict), threads (envpool, replay sampler, torch), compile mode,
autocast dtype, pinned buffers. Every other module receives the concrete values and
never re-parses a config string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from dqnfast import hardware
from dqnfast.agent.networks import check_fits, network_kind
from dqnfast.config.schema import (
    Amp,
    AutoBool,
    ChannelsLast,
    CompileMode,
    Config,
    ConfigError,
    LearnerName,
    NetworkName,
    ObsKind,
    Storage,
)
from dqnfast.openmp import spin_is_short

__all__ = [
    "Resolved",
    "MAX_THREADS",
    "MAX_THREADS_PER_CORE",
    "available_cores",
    "check_native_bf16",
    "check_thread_counts",
    "cpu_line",
    "job_cores",
    "max_threads",
    "observation_kind",
    "resolve",
    "resolve_amp",
    "resolve_channels_last",
    "resolve_compile",
    "resolve_device",
    "resolve_nograd_amp",
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


# algo.compile=auto runs the CPU's update eagerly. Timed side by side on one thread of a 2-core AMD
# EPYC (AVX-512; 50 updates of each in turn, batch 32, Nature CNN): the eager update with the fused
# Adam kernel and the NHWC gradient forward (``algo.channels_last=auto``) took a median 62.2 ms,
# the compiled one 62.0 ms (NHWC) and 63.0 ms (NCHW), against 67.4 ms for the eager NCHW one: what
# compiling gained over the eager update before (1.3x end to end) it no longer gains over the one
# with the fused Adam step. Compiling costs 20 s cold and a C++ compiler on the machine, for no
# measured gain, even in a long run. (End to end, ``benchmarks/cpu_defaults.py``: 1.00x and 1.24x in two rounds, on a
# machine too busy to split them.) ``true`` still compiles.


def resolve_compile(mode: Any, device: Any) -> str | None:
    """How the update runs: None = eager, else the ``torch.compile`` mode.

    mode: a ``CompileMode`` (what a validated config holds) or its value (a bool too, from a
    library caller). ``auto``: ``reduce-overhead`` (compiled, replayed as CUDA graphs) on
    CUDA, eager on the CPU (see above); ``true`` = ``default``; ``false`` = eager; any other
    value is a torch.compile mode.
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
    """The autocast dtype of every forward pass: ``bf16`` -> torch.bfloat16; ``none`` and ``bf16_nograd``
    -> None (fp32 where gradients flow). amp: an ``Amp`` or its value (ConfigError otherwise)."""
    return torch.bfloat16 if Amp.parse(amp, "algo.amp") == Amp.bf16 else None


def resolve_nograd_amp(amp: Any):
    """The autocast dtype of the forward passes that carry no gradient (the target network's, the
    double-DQN argmax's, the actor's): torch.bfloat16 for ``bf16`` and ``bf16_nograd``, else None."""
    return torch.bfloat16 if Amp.parse(amp, "algo.amp") in (Amp.bf16, Amp.bf16_nograd) else None


def check_native_bf16(amp: Any, device: Any, cpu: hardware.CpuFeatures) -> None:
    """Refuses, in one line, bf16 autocast on a CPU that emulates bf16 (``cpu.native_bf16`` false).

    oneDNN runs bf16 convolutions in fp32 with conversions on such a CPU: a Nature-CNN update
    under bf16 autocast was measured 8x slower than in fp32 on an AVX2 AMD EPYC.
    """
    amp = Amp.parse(amp, "algo.amp")
    if amp != Amp.none and torch.device(device).type == "cpu" and not cpu.native_bf16:
        raise ConfigError(
            "algo.amp",
            f"{amp.value} needs native bf16, which this CPU ({cpu.describe()}) lacks: bf16 autocast would run "
            f"several times slower than fp32 here; use algo.amp=none",
        )


# channels_last=auto on the CPU: NHWC for the online network's gradient forward and backward only
# (``train``). Timed side by side on one thread of an AMD EPYC with AVX-512 (``benchmarks/roofline.py``,
# whole eager updates at batch 32 with fused Adam, two runs): the NHWC input made the update 1.09x
# and 1.11x faster (41.6 -> 37.6 ms); the online network's weights in NHWC 1.00x, both networks'
# 0.97x and 1.04x, since the no-grad forwards (target, double-DQN argmax) run slower in NHWC (9.0 vs
# 7.5 ms) while the gradient forward and backward run faster (22.5 vs 26.1 ms). On an AMD EPYC with
# AVX2 only, the same whole updates alternated four times each: 1.12x on one thread and on two
# (medians 73.8 -> 65.1 ms and 80.3 -> 71.7 ms), and 1.07x in roofline.py's run. Not measured
# elsewhere (older ISAs, an MLP, bf16 forwards with gradient, CUDA): auto keeps the default layout there.
_CHANNELS_LAST_ISAS = ("AVX2", "AVX-512", "AMX")


def resolve_channels_last(
    mode: Any, device: Any, network: NetworkName | str, amp: Any, cpu: hardware.CpuFeatures
) -> ChannelsLast:
    """``algo.channels_last`` made concrete: ``true`` | ``train`` | ``false`` (``auto`` resolved).

    An MLP has no convolutions: every mode is ``false`` for it."""
    mode = ChannelsLast.parse(mode, "algo.channels_last")
    if NetworkName.of(network) != NetworkName.nature:
        return ChannelsLast.false
    if mode != ChannelsLast.auto:
        return mode
    fp32_grad = Amp.parse(amp, "algo.amp") != Amp.bf16
    cpu_fast = torch.device(device).type == "cpu" and cpu.isa in _CHANNELS_LAST_ISAS
    return ChannelsLast.train if fp32_grad and cpu_fast else ChannelsLast.false


# Training on the CPU, torch gets every core of a small machine when OpenMP's workers sleep soon at
# a barrier (``dqnfast.openmp``: the command lines shorten libgomp's spin before torch loads), and half
# of them otherwise. Measured on a 2-core AMD EPYC (AVX2) (``benchmarks/RESULTS.md``, "Every core"):
# one update ran 1.6x faster on both cores than on one, and the default recipe's learning phase alone
# on the machine 1.07x to 1.3x (``benchmarks/cpu_defaults.py``). With torch's default spin, a busy
# process beside the run made two threads 1.7x to 2.2x SLOWER than one (4x to 9x on a shared AVX-512
# machine): a worker descheduled by the other process holds up every barrier while its partner
# spins. With the spin shortened that loss is 0.83x to 0.95x. Beyond MAX_ALL_CORES cores torch keeps
# half (not measured: a batch-32 update gains little from more threads, and envpool's workers need
# cores too). Only the Nature CNN's update is heavy enough to share: an MLP's or MinAtar's small CNN's
# operations are too short to split, and a second thread doubled the CPU time of CartPole runs
# (``preset=cartpole``: 97 s of CPU for a 47 s run) for no speed, so they keep half the cores, as does a
# sweep's job (a share of a machine that other jobs use). The thread count is fixed for a run (it
# splits the reductions, so it decides the rounding); a resume keeps the config's. The start-up line
# names the count and why.
MAX_ALL_CORES = 4


def thread_counts(
    cores: int,
    *,
    cpu: bool,
    envs: int | None = None,
    sampler: int | None = None,
    torch_threads: int | None = None,
    short_spin: bool | None = None,
    heavy: bool = False,
) -> tuple[int, int, int | None]:
    """(envpool, sampler, torch) threads for ``cores`` cores; a given (non-zero) count is kept.

    On the CPU torch gets every core up to ``MAX_ALL_CORES`` for a ``heavy`` update (the Nature
    CNN's) when OpenMP's spin-wait is short (``short_spin``, default: read from the environment by
    ``dqnfast.openmp.spin_is_short``), else half the cores (see above). On CUDA torch keeps its
    default (None) unless a share of a machine was given (``share_cores``).
    """
    if torch_threads or not cpu:
        return (envs or cores, sampler or cores, torch_threads or None)
    short = spin_is_short() if short_spin is None else short_spin
    n = cores if heavy and short and cores <= MAX_ALL_CORES else max(1, cores // 2)
    return (envs or cores, sampler or cores, n)


def _threads_why(cfg: Config, r: "Resolved") -> str:
    """Why torch got the threads it got, for the start-up line."""
    if cfg.torch_threads:
        return "torch_threads"
    if r.cores == 1:
        return "the one core"
    if r.torch_threads == r.cores:
        return (
            f"every core: OpenMP's spin-wait is short ({_spin_setting()}), so a core another process takes costs little"
        )
    if r.cores > MAX_ALL_CORES or r.network != NetworkName.nature:
        return f"half of the {r.cores} cores: envpool steps on the rest" + (
            "" if r.network == NetworkName.nature else f"; a {r.network.value} network's update is too small to split"
        )
    return (
        f"half of the {r.cores} cores: OpenMP's spin-wait is long ({_spin_setting()}), which makes every core slow when "
        "another process takes one; set GOMP_SPINCOUNT=1000 before starting Python to use them all"
    )


def _spin_setting() -> str:
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if key in os.environ:
            return f"{key}={os.environ[key]}"
    return "libgomp's default"


def cpu_line(cfg: Config, r: Resolved, cpu: hardware.CpuFeatures) -> str:
    """One start-up line for a CPU run: the CPU, then torch's threads, the precision, the compile mode and the
    layout chosen for it, each with its reason, e.g. ``cpu: AMD EPYC, AVX-512, native bf16; torch 1 thread
    (half of the 2 cores: ...), fp32 (bf16 is opt-in: algo.amp=bf16_nograd), eager (...), channels_last for the
    gradient forward (faster with AVX-512)``."""
    a = cfg.algo
    n = r.torch_threads or torch.get_num_threads()
    threads = f"torch {n} thread{'s' if n != 1 else ''} ({_threads_why(cfg, r)})"
    amp = Amp.parse(a.amp, "algo.amp")
    if amp == Amp.bf16:
        precision = "bf16 autocast of every forward (algo.amp=bf16)"
    elif amp == Amp.bf16_nograd:
        precision = "fp32, bf16 autocast of the no-grad forwards (algo.amp=bf16_nograd)"
    elif cpu.native_bf16 and r.network == NetworkName.nature:
        precision = "fp32 (bf16 is opt-in: algo.amp=bf16_nograd)"
    else:
        precision = "fp32"
    mode = CompileMode.parse(a.compile, "algo.compile")
    if mode != CompileMode.auto:
        compiled = f"compiled, mode {r.compile_mode}" if r.compile_mode else "eager"
        compiled += f" (algo.compile={mode.value})"
    else:
        compiled = "eager (compiling was measured no faster than the fused eager update on a CPU)"
    parts = [threads, precision, compiled]
    if r.network == NetworkName.nature:
        layout_auto = ChannelsLast.parse(a.channels_last, "algo.channels_last") == ChannelsLast.auto
        parts.append(
            {
                ChannelsLast.train: "channels_last for the gradient forward"
                + (f" (faster with {cpu.isa})" if layout_auto else " (algo.channels_last=train)"),
                ChannelsLast.true: "channels_last (algo.channels_last=true)",
                ChannelsLast.false: "default layout"
                + (" (channels_last measured faster only with AVX2 or wider in fp32)" if layout_auto else ""),
            }[r.channels_last]
        )
    return f"cpu: {cpu.describe()}; " + ", ".join(parts)


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
    pinned host buffers. nograd_amp_dtype: autocast dtype of the forward passes without
    gradient (``algo.amp=bf16_nograd``) or None. channels_last: ``true`` | ``train`` | ``false``.
    cpu_line: the start-up line naming the CPU and what was chosen for it, and why (CPU runs).
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
    nograd_amp_dtype: Any = None
    channels_last: ChannelsLast = ChannelsLast.false
    cpu_line: str | None = None

    @property
    def game(self) -> tuple[str, str]:
        """(task_id, family), as ``dqnfast.envs.resolve_game`` gives them: what ``make_env`` takes as ``task``."""
        return self.task_id, self.family


# Families whose observations are images CxHxW, stored whole: a Gymnasium game's, envpool's Procgen.
IMAGE_FAMILIES = ("gym_image", "envpool_image")


def observation_kind(family: str, obs: ObsKind) -> str:
    """What the network sees: the config's ``obs`` for an Atari game, ``image`` for a game with image
    observations (``IMAGE_FAMILIES``), ``vector`` otherwise."""
    if family == "atari":
        return ObsKind.of(obs).value
    return "image" if family in IMAGE_FAMILIES else "vector"


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


def _network(cfg: Config, task_id: str, family: str, obs_kind: str) -> NetworkName:
    """The architecture ``network.name`` gives; ConfigError when it cannot take the observations."""
    # looked up at each call (tests replace envs' functions on its module); and envs imports this module
    from dqnfast.envs import image_shape

    shape = {ObsKind.pixels: (cfg.envs.stack, 84, 84), ObsKind.ram: (128,)}.get(obs_kind)  # vector: the env's
    if obs_kind == "image":
        shape = image_shape(task_id, family)
    kind = network_kind(cfg.network.name, obs_kind, shape)
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
    network = _network(cfg, task_id, family, obs_kind)
    device = resolve_device(cfg.device)
    cores = available_cores()
    envs, sampler, torch_threads = thread_counts(
        cores,
        cpu=device.type == "cpu",
        envs=cfg.envs.num_threads,
        sampler=cfg.replay.num_threads,
        torch_threads=cfg.torch_threads,
        heavy=network == NetworkName.nature,
    )
    on_device = cfg.replay.storage == Storage.cuda
    if on_device and device.type != "cuda":
        raise ConfigError(
            "replay.storage", f"cuda storage needs a CUDA device, but this run is on {device}; use replay.storage=cpu"
        )
    cpu = hardware.probe()  # looked up at each call: tests replace it on its module
    check_native_bf16(cfg.algo.amp, device, cpu)
    r = Resolved(
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
        nograd_amp_dtype=resolve_nograd_amp(cfg.algo.amp),
        channels_last=resolve_channels_last(cfg.algo.channels_last, device, network, cfg.algo.amp, cpu),
    )
    if device.type == "cpu":
        r = replace(r, cpu_line=cpu_line(cfg, r, cpu))
    return r
