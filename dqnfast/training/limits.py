"""What a run may ask of the machine, checked before anything is allocated.

* **Memory**: one budget for the whole run (``run_memory_needs``): the replay ring,
  envpool's per-env state times ``envs.num_envs`` (the training envs or the final
  evaluation's, whichever is larger: the ring is still alive during the evaluation), the
  two sample buffers, the action log of ``envs.resume=replay``, and on the CPU the
  networks, their optimizer state and the activations of an update and of the actor's
  forward pass. It must fit ``dqnfast.memory``'s rule: at most 90% of the tightest of
  MemAvailable, the cgroup v2 limit and the cgroup v1 limit, minus 512 MiB.
* **Seeds**: envpool takes int32 seeds and seeds env ``i`` with ``seed + i``; a run
  derives ``seed + i`` (training envs), ``seed + EVAL_SEED_OFFSET + i`` (the final
  evaluation), ``seed + ENV_RESEED_STRIDE * r + i`` (the envs of resume ``r`` with
  ``envs.resume=reseed``, room kept for ``RESERVED_RESUMES`` resumes), and seeds the
  replay sampler (uint64), torch (uint64) and numpy (uint32) with values below those.
  ``seed_limit`` is the largest seed for which all of them fit.

Each check raises ``ConfigError`` naming the key to change, in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dqnfast.agent.networks import NetworkSpec, network_kind, parameter_count
from dqnfast.config import Config, ConfigError
from dqnfast.config.resolve import observation_kind
from dqnfast.config.schema import EnvResume, LearnerName, NetworkName, ObsKind, Storage
from dqnfast.evaluation.protocol import EVAL_SEED_OFFSET
from dqnfast.memory import MemorySources, available_memory, plannable_bytes
from dqnfast.replay.ring import batch_nbytes, ring_nbytes
from dqnfast.training.resume import ENV_RESEED_STRIDE, ring_capacity

__all__ = [
    "INT32_MAX",
    "RESERVED_RESUMES",
    "Need",
    "check_resume_seed",
    "check_run_memory",
    "check_seed",
    "run_memory_needs",
    "seed_limit",
]

INT32_MAX = 2**31 - 1
RESERVED_RESUMES = 100  # resumes with envs.resume=reseed that every accepted seed leaves room for

# envpool's host memory per env (envpool 1.2.5), measured as the growth of the process's RSS
# between 16 and 128 envs after a reset and 200 random steps: Pong 1.24 MB per env at stack 4
# and 2.48 MB at stack 16, i.e. about 0.87 MB (the ALE emulator, its ROM and screen buffers)
# plus 14 copies of an observation (envpool's state queue, the env's frame stack and max-pool
# buffers); CartPole 8 KB per env. Budgeted with some room: 1 MB + 16 observations, 16 KB.
ATARI_ENV_BYTES = 1_000_000
OBS_BUFFERS = 16
CLASSIC_ENV_BYTES = 16_000
_CLASSIC_OBS = {"CartPole-v1": 4, "Acrobot-v1": 6, "MountainCar-v0": 2}
_MAX_ACTIONS = 18  # Atari's full action set; classic control has at most 3
_PASSES = 4  # an update: Q_target(s'), Q_online(s'), Q_online(s) and its backward pass


@dataclass(frozen=True)
class Need:
    """One line of the budget: ``nbytes`` for ``what``, sized by config ``key`` (``unit``: bytes per unit of it)."""

    key: str
    what: str
    nbytes: int
    unit: int = 0


def _frames(cfg: Config, task_id: str, family: str, obs_kind: str) -> tuple[int, int, tuple[int, ...]]:
    """(bytes of one stored frame, frames per observation, one observation's shape)."""
    from dqnfast.envs import image_shape  # looked up at each call; and envs imports the config this module reads

    if obs_kind == ObsKind.pixels:
        return 84 * 84, int(cfg.envs.stack), (int(cfg.envs.stack), 84, 84)
    if obs_kind == ObsKind.ram:
        return 128, 1, (128,)
    if obs_kind == "image":  # uint8 CxHxW; a size not known before the env is made is budgeted as MinAtar's
        shape = image_shape(task_id, family) or (10, 10, 10)
        return math.prod(shape), 1, tuple(shape)
    size = _CLASSIC_OBS.get(task_id, 16)
    return 4 * size, 1, (size,)


def _nature_activations(c: int, h: int, w: int) -> int:
    """The Nature CNN's convolution outputs for one CxHxW input (8x8/4 -> 32, 4x4/2 -> 64, 3x3/1 -> 64)."""
    h1, w1 = (h - 8) // 4 + 1, (w - 8) // 4 + 1
    h2, w2 = (h1 - 4) // 2 + 1, (w1 - 4) // 2 + 1
    return 32 * h1 * w1 + 64 * h2 * w2 + 64 * (h2 - 2) * (w2 - 2)


def _network_floats(cfg: Config, obs_kind: str, obs_shape: tuple[int, ...]) -> tuple[NetworkName, int, int]:
    """(architecture, parameters, activations per sample of one forward pass) of the Q-network, in float32s.

    The parameters are counted on the network itself (``dqnfast.agent.networks.parameter_count``), with
    Atari's full action set: the memory is checked before the env says how many actions it has.
    """
    n, a = cfg.network, _MAX_ACTIONS
    kind = network_kind(n.name, obs_kind, obs_shape)
    heads = 2 if n.dueling else 1
    inputs = math.prod(obs_shape)
    if kind == NetworkName.nature:
        h = int(n.cnn_hidden)
        spec = NetworkSpec(kind.value, list(obs_shape), "uint8", a, bool(n.dueling), [h])
        acts = inputs + 2 * _nature_activations(*obs_shape) + 2 * heads * h + a
        return kind, parameter_count(spec), acts
    if kind == NetworkName.minatar:
        h = int(n.cnn_hidden)
        c, hh, ww = obs_shape if len(obs_shape) == 3 else (10, 10, 10)  # sized for MinAtar's largest frames
        spec = NetworkSpec(kind.value, [c, hh, ww], "uint8", a, bool(n.dueling), [h])
        return kind, parameter_count(spec), inputs + 2 * 16 * (hh - 2) * (ww - 2) + 2 * heads * h + a
    widths = [inputs, *[int(x) for x in n.mlp_hidden]]
    spec = NetworkSpec(kind.value, [widths[0]], "float32", a, bool(n.dueling), widths[1:])
    return kind, parameter_count(spec), widths[0] + 2 * sum(widths[1:]) * heads + a


def run_memory_needs(cfg: Config, task_id: str, family: str, *, on_cpu: bool) -> list[Need]:
    """The run's host-memory budget, item by item (see the module docstring). on_cpu: the networks train on the CPU.

    task_id, family: the game as ``dqnfast.config.resolve.Resolved`` holds it (``task_id``, ``family``).
    """
    e, a = cfg.envs, cfg.algo
    obs_kind = observation_kind(family, cfg.obs)
    frame_bytes, stack, obs_shape = _frames(cfg, task_id, family, obs_kind)
    kind, params, acts = _network_floats(cfg, obs_kind, obs_shape)
    per_env = (ATARI_ENV_BYTES if family == "atari" else CLASSIC_ENV_BYTES) + OBS_BUFFERS * stack * frame_bytes
    if on_cpu:  # the actor's forward pass over every env's observation
        per_env += 4 * acts
    n_envs = max(int(e.num_envs), min(int(e.eval.num_envs), int(e.eval.episodes)))
    needs = [Need("envs.num_envs", f"{n_envs} envs", n_envs * per_env, per_env)]
    if cfg.learner != LearnerName.dqn:
        return needs
    capacity = ring_capacity(cfg.replay.capacity, e.num_envs)
    on_host = cfg.replay.storage == Storage.cpu
    per_slot = ring_nbytes(1, frame_bytes, frames_on_host=on_host, prioritized=bool(cfg.replay.prioritized))
    needs.append(Need("replay.capacity", "replay ring", capacity * per_slot, per_slot))
    shared = stack > 1 and cfg.replay.n_step == 1
    per_row = 2 * batch_nbytes(1, stack, frame_bytes, shared=shared)  # two buffers used in turn
    if on_cpu:
        per_row += 4 * _PASSES * acts
    needs.append(Need("algo.batch_size", "sample buffers and update", a.batch_size * per_row, per_row))
    if on_cpu:
        key = "network.cnn_hidden" if kind in (NetworkName.nature, NetworkName.minatar) else "network.mlp_hidden"
        needs.append(Need(key, "networks and optimizer", 4 * 6 * params))  # online, target, grads, 2 moments, temps
    if e.resume == EnvResume.replay:  # one byte per agent step, in a buffer that doubles, copied into checkpoints
        needs.append(Need("envs.resume", "action log", 4 * int(a.total_steps)))
    return needs


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def check_run_memory(
    cfg: Config, task_id: str, family: str, *, on_cpu: bool, sources: MemorySources | None = None
) -> list[Need]:
    """Refuses, in one line, a run whose budget does not fit; returns the budget.

    The error names the biggest item's key, how much the run needs, how much there is
    and from which source, and the largest value of that key that would fit.
    """
    needs = run_memory_needs(cfg, task_id, family, on_cpu=on_cpu)
    total = sum(n.nbytes for n in needs)
    avail = available_memory(sources)
    budget = plannable_bytes(avail.nbytes)
    if total <= budget:
        return needs
    big = max(needs, key=lambda n: n.nbytes)
    parts = ", ".join(f"{n.what} {_gb(n.nbytes)}" for n in needs)
    fix = f"lower {big.key}"
    room = budget - (total - big.nbytes)
    if big.unit and room > 0:
        fix += f" to at most {room // big.unit}"
    elif big.unit:
        fix += " (the rest of the run alone does not fit)"
    others = sorted({n.key for n in needs if n.key not in (big.key, "envs.resume") and n.nbytes > total / 20})
    if others:
        fix += f" (or {' / '.join(others)})"
    raise ConfigError(
        big.key,
        f"this run needs {_gb(total)} of RAM ({parts}) but {avail.source} leaves {_gb(avail.nbytes)}, "
        f"of which at most 90% minus 0.5 GB ({_gb(budget)}) may be planned; {fix}, or free memory "
        "(replay.check_memory=false skips this check)",
    )


def seed_limit(cfg: Config) -> int:
    """The largest ``seed`` whose derived env seeds all fit in int32 (see the module docstring)."""
    n = int(cfg.envs.num_envs)
    eval_n = max(1, min(int(cfg.envs.eval.num_envs), int(cfg.envs.eval.episodes)))
    reach = max(ENV_RESEED_STRIDE * RESERVED_RESUMES + n - 1, EVAL_SEED_OFFSET + eval_n - 1)
    return INT32_MAX - reach


def check_seed(cfg: Config) -> None:
    """Refuses a seed outside [0, seed_limit(cfg)] in one line that gives the range."""
    hi = seed_limit(cfg)
    s = cfg.seed
    if isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= hi:
        return
    raise ConfigError(
        "seed",
        f"{s!r} is out of range: use a seed in [0, {hi}] (envpool takes int32 seeds, and this run derives "
        f"seed + env index for {cfg.envs.num_envs} envs, seed + {EVAL_SEED_OFFSET} + i for the final evaluation "
        f"and seed + {ENV_RESEED_STRIDE} x r for up to {RESERVED_RESUMES} resumes)",
    )


def check_resume_seed(env_seed: int, num_envs: int, resumes: int) -> None:
    """Refuses a resumed run whose envs' seeds would pass int32 (after more resumes than were reserved)."""
    if env_seed + num_envs - 1 > INT32_MAX:
        raise ConfigError(
            "resume",
            f"resume #{resumes} would seed the envs with {env_seed}, past envpool's int32 seeds (the run's seed "
            f"leaves room for {RESERVED_RESUMES} resumes); start a new run from a smaller seed",
        )
