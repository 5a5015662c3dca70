"""Typed configuration of a training run, and its start-up checks.

Every default lives in the YAML files under ``conf/`` (Hydra config groups); the
dataclasses here are the *schema*: ``dqnfast.cli.train`` registers them in Hydra's
ConfigStore so that a wrong type fails at composition, and calls ``validate``
on the composed config so that a wrong value fails at start-up with one line:
``error: <key>: <message>``. This module is plain Python (no Hydra import), so
tests and other tools can build a ``Config()`` directly.

Units: "agent steps" (or "env steps") are calls of ``env.step`` summed over all
envs; one agent step is ``envs.frame_skip`` emulator frames (4 for Atari).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum, EnumMeta, StrEnum
from typing import Any, Dict, List, Optional

__all__ = [
    "AlgoConfig",
    "Config",
    "ConfigError",
    "EnvsConfig",
    "EvalProtocolConfig",
    "ExploreConfig",
    "LoggerConfig",
    "NOOP_MAX_HINT",
    "NetworkConfig",
    "OptimConfig",
    "ProtocolConfig",
    "ReinforceConfig",
    "ReplayConfig",
    "MAX_STACK",
    "MAX_STEPS",
    "check_learning_starts",
    "NETWORK_NAMES",
    "OBS_KINDS",
    "validate",
]


class _Caseless(EnumMeta):
    """Looks members up by name without regard to case: OmegaConf converts a YAML or
    command-line string with ``Enum[name]``, and ``optim.name=Adam`` has always worked."""

    def __getitem__(cls, name: Any) -> Any:
        return super().__getitem__(name.lower() if isinstance(name, str) else name)


class Choice(StrEnum, metaclass=_Caseless):
    """A config choice: a str (``Loss.huber == "huber"``) whose members' names are their values.

    ``what`` names the choice in the one-line error for a value that is not a member.
    """

    @classmethod
    def parse(cls, value: Any, key: str) -> Choice:
        """The member for ``value`` (any case), or ConfigError(key, "unknown <what> ...; choose one of ...")."""
        try:
            return cls[str(value.value if isinstance(value, Enum) else value)]
        except KeyError:
            raise ConfigError(
                key, f"unknown {cls.what()} {str(value)!r}; choose one of {', '.join(m.value for m in cls)}"
            ) from None

    @classmethod
    def of(cls, value: Any) -> Choice:
        """The member whose value is ``value`` (a member: itself), for library callers that pass a value;
        ValueError "unknown <what> ...; choose one of ..." otherwise. A validated Config holds members already."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unknown {cls.what()} {value!r}; choose one of {', '.join(m.value for m in cls)}"
            ) from None

    @classmethod
    def what(cls) -> str:
        return _WHAT[cls.__name__]


class ObsKind(Choice):
    pixels = "pixels"
    ram = "ram"


class NetworkName(Choice):
    auto = "auto"
    nature = "nature"
    mlp = "mlp"
    minatar = "minatar"


class OptimName(Choice):
    adam = "adam"
    rmsprop = "rmsprop"


class Loss(Choice):
    huber = "huber"
    mse = "mse"


class Schedule(Choice):
    linear = "linear"
    exponential = "exponential"


class Distributional(Choice):
    none = "none"
    c51 = "c51"


class Amp(Choice):
    none = "none"
    bf16 = "bf16"
    bf16_nograd = "bf16_nograd"


class Storage(Choice):
    cpu = "cpu"
    cuda = "cuda"


# ``async`` is a Python keyword: the members are named through the functional API
Vectorization = Choice("Vectorization", {"sync": "sync", "async": "async"})


class EnvResume(Choice):
    reseed = "reseed"
    replay = "replay"


class LearnerName(Choice):
    dqn = "dqn"
    reinforce = "reinforce"


class PolicyKind(Choice):
    mlp = "mlp"
    linear = "linear"


class Baseline(Choice):
    none = "none"
    mean = "mean"
    value = "value"


class WandbMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


# Three choices stay ``str`` fields, checked against these sets: their values include true and
# false, which YAML and Hydra's override parser read as booleans, and OmegaConf refuses a
# boolean for an Enum field (``algo.compile=false`` is a documented command).
CompileMode = Choice(
    "CompileMode",
    [
        (v, v)
        for v in ("auto", "true", "false", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    ],
    module=__name__,
)
AutoBool = Choice("AutoBool", [(v, v) for v in ("auto", "true", "false")], module=__name__)
# algo.channels_last: true = both networks in NHWC (every forward); train = only the input of the
# online network's gradient forward (its backward follows); auto = what the device runs fastest
# (config.resolve.resolve_channels_last).
ChannelsLast = Choice("ChannelsLast", [(v, v) for v in ("auto", "true", "false", "train")], module=__name__)

_WHAT = {
    "ObsKind": "observation kind",
    "NetworkName": "network",
    "OptimName": "optimizer",
    "Loss": "loss",
    "Schedule": "schedule",
    "Amp": "amp mode",
    "Distributional": "distributional head",
    "Storage": "replay storage",
    "EnvResume": "env resume mode",
    "Vectorization": "vectorization mode",
    "WandbMode": "wandb mode",
    "LearnerName": "learner",
    "PolicyKind": "policy",
    "Baseline": "baseline",
    "CompileMode": "compile mode",
    "AutoBool": "pin_memory mode",
    "ChannelsLast": "channels_last mode",
}
NETWORK_NAMES = tuple(m.value for m in NetworkName)
MAX_STACK = 64  # the longest frame stack the replay ring rebuilds (kMaxStack in csrc/replay_ring.h)
# Agent steps a run may count to: the replay ring keeps each env's step count below 2^48
# (dqnfast.replay.files.MAX_CURSOR), 9 years at a million agent steps a second.
MAX_STEPS = 2**48
_INT32_MAX = 2**31 - 1  # envpool's config integers
_INT64_MAX = 2**63 - 1
# (lowest, highest, why) of integer keys with a bound of their own; every other integer key must fit
# int64. seed and the thread counts are checked elsewhere with ranges of their own (training.limits,
# config.resolve).
_STEPS = "agent steps: the replay ring counts each env's steps below 2^48"
_ENVPOOL = "envpool takes 32-bit integers"
_INT_RANGES = {
    "algo.total_steps": (1, MAX_STEPS, _STEPS),
    "algo.learning_starts": (0, MAX_STEPS, _STEPS),
    "explore.decay_steps": (1, MAX_STEPS, _STEPS),
    "logger.log_every": (1, MAX_STEPS, _STEPS),
    "logger.checkpoint_every": (0, MAX_STEPS, _STEPS),
    "logger.score_window": (1, MAX_STEPS, "games: a run plays fewer than it has agent steps"),
    **{f"envs.{k}": (1, _INT32_MAX, _ENVPOOL) for k in ("num_envs", "frame_skip", "batch_size")},
    **{f"envs.{p}.noop_max": (0, _INT32_MAX, _ENVPOOL) for p in ("train", "eval")},
    **{f"envs.{p}.max_episode_steps": (1, _INT32_MAX, _ENVPOOL) for p in ("train", "eval")},
    "envs.eval.episodes": (0, _INT32_MAX, _ENVPOOL),
    "envs.eval.num_envs": (1, _INT32_MAX, _ENVPOOL),
}
_OWN_RANGE_CHECKS = ("seed", "torch_threads", "envs.num_threads", "replay.num_threads")
OBS_KINDS = tuple(m.value for m in ObsKind)


def plain(x: Any) -> Any:
    """``x`` with every Enum member replaced by its value (checkpoints and loggers hold plain types)."""
    if isinstance(x, Enum):
        return x.value
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(plain(v) for v in x)
    return x


class ConfigError(ValueError):
    """A config value is wrong. ``key`` is its dotted path (``optim.lr``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# --------------------------------------------------------------------- schema
@dataclass
class ProtocolConfig:
    """How an Atari env is played (classic control ignores these fields).

    episodic_life: a life loss ends the episode (terminated=True; the game goes on).
    reward_clip: rewards clipped to their sign (scores are logged unclipped either way).
    noop_max: up to this many no-op agent steps at reset, at least 1 (envpool plays between
    one and noop_max, none in games that start with FIRE). repeat_action_probability:
    sticky actions (0.25 in Machado et al. 2018). max_episode_steps: agent steps before
    truncation (27000 = 108k frames).
    """

    episodic_life: bool = True
    reward_clip: bool = True
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    max_episode_steps: int = 27000


@dataclass
class EvalProtocolConfig(ProtocolConfig):
    """The evaluation protocol: whole games, unclipped scores.

    episodes: games played in the final evaluation (each counted once);
    num_envs: envs playing them in parallel (at most ``episodes``).
    """

    episodic_life: bool = False
    reward_clip: bool = False
    episodes: int = 10
    num_envs: int = 8


@dataclass(init=False)  # its __init__ below: the generated one cannot take the keyword ``import``
class EnvsConfig:
    """envpool settings.

    num_envs: envs stepped in parallel. batch_size: results per ``recv``;
    null or 0 = num_envs (synchronous); smaller = asynchronous send/recv.
    num_threads: envpool worker threads; null or 0 = all cores; at most 4 per core of the
        process's affinity mask and 1024 in all (``dqnfast.config.resolve.max_threads``).
    frame_skip: emulator frames per agent step (Atari). stack: frames per observation
        (Atari pixels), 1 to 64, the longest stack the replay ring rebuilds.
    resume: how ``train resume=<run dir>`` restarts the envs (envpool state cannot be
        saved): ``reseed`` = new envs seeded ``seed + 1_000_000 * resume_count``
        (games in progress are dropped); ``replay`` = the same envs, fast-forwarded by
        replaying every action sent since the run started (ALE and envpool's classic
        control are deterministic for a seed), so a resumed run continues exactly the
        same env stream; it records one byte per agent step and needs synchronous envs.
        ``learner=reinforce`` replays only each env's resets (see docs/reinforce.md).
    vectorization: how a Gymnasium game (``game=gym:<id>``) runs its envs: ``sync`` (one process)
        | ``async`` (one subprocess per env, stepping while the learner updates).
    make_kwargs: keyword arguments for ``gym.make`` of a Gymnasium game (``{max_episode_steps: 200}``), or
    envpool settings of an envpool game (Procgen's ``{num_levels: 200, distribution_mode: 0}``) other than
    those dqnfast sets from its own keys.
    import: a module imported before a Gymnasium game is made (one that registers the user's env).
    """

    num_envs: int = 8
    batch_size: Optional[int] = None
    num_threads: Optional[int] = None
    frame_skip: int = 4
    stack: int = 4
    resume: EnvResume = EnvResume.reseed
    train: ProtocolConfig = field(default_factory=ProtocolConfig)
    eval: EvalProtocolConfig = field(default_factory=EvalProtocolConfig)
    vectorization: Vectorization = Vectorization.sync
    make_kwargs: Dict[str, Any] = field(default_factory=dict)
    # ``import`` is a Python keyword: the field is declared through the class namespace and read as
    # ``getattr(envs, "import")``; left out of the generated repr and eq, which would name it as code
    __annotations__["import"] = "Optional[str]"
    locals()["import"] = field(default=None, repr=False, compare=False)

    def __init__(self, **values: Any) -> None:
        """Keyword arguments only, one per field (``**{"import": "my_envs"}`` for the keyword)."""
        for f in fields(EnvsConfig):
            if f.name in values:
                setattr(self, f.name, values.pop(f.name))
            else:
                setattr(self, f.name, f.default_factory() if f.default_factory is not MISSING else f.default)
        if values:
            raise TypeError(f"EnvsConfig got unknown keys: {', '.join(values)}")


@dataclass
class AlgoConfig:
    """The DQN algorithm.

    total_steps: agent steps (all envs) to train for. gamma: discount per agent
    step. double: double-DQN target (van Hasselt 2016); false = Nature max target.
    batch_size: transitions per update. replay_ratio: transitions sampled per agent
    step (8 = one batch-32 update every 4 agent steps, as in Nature).
    learning_starts: agent steps of uniform-random play before the first update (at most
    total_steps: a DQN run that never reaches it would make no update).
    target_update_period: updates between target syncs.
    tau: at a sync target <- tau * online + (1 - tau) * target (1: a hard copy).
    loss: huber (delta 1: Nature's error clipping) | mse. max_grad_norm: clip the gradient norm (null: off).
    compile: how the update runs: auto (reduce-overhead on CUDA, eager on CPU: the eager update
    with the fused Adam kernel was measured as fast as the compiled one) | false (eager) | true
    (= default) | a torch.compile mode: default, reduce-overhead (compiled and replayed as CUDA
    graphs), max-autotune, max-autotune-no-cudagraphs.
    amp: none (fp32) | bf16 (bfloat16 autocast of the network's forward passes; the loss
    and the optimizer stay fp32) | bf16_nograd (bfloat16 autocast of the forward passes that
    carry no gradient only: the target network's, the double-DQN argmax's and the actor's).
    On a CPU without native bf16 both bf16 modes are refused (they run several times slower).
    channels_last: auto (train on a CPU with AVX2 or wider training the Nature CNN in fp32, false
    otherwise) | true (both networks NHWC: helps with bf16 on recent GPUs) | train (NHWC input
    for the online network's gradient forward and backward only) | false.
    distributional: none (one Q-value per action) | c51 (Bellemare et al. 2017: a categorical
    distribution of the return over ``atoms`` evenly spaced values on [v_min, v_max], the
    projected distributional target, the cross-entropy loss; Q is the distribution's mean).
    atoms: the support's size (C51: 51). v_min: the support's lowest return (C51: -10).
    v_max: its highest return (C51: 10; Atari's rewards are clipped to [-1, 1], so returns at
    gamma 0.99 stay inside).
    """

    total_steps: int = 10_000_000
    gamma: float = 0.99
    double: bool = True
    batch_size: int = 32
    replay_ratio: float = 8.0
    learning_starts: int = 50_000
    target_update_period: int = 10_000
    tau: float = 1.0
    loss: Loss = Loss.huber
    max_grad_norm: Optional[float] = 10.0
    compile: str = "auto"  # a CompileMode, as a str: see CompileMode
    amp: Amp = Amp.none
    channels_last: str = "auto"  # a ChannelsLast, as a str: see ChannelsLast
    distributional: Distributional = Distributional.none
    atoms: int = 51
    v_min: float = -10.0
    v_max: float = 10.0


@dataclass
class NetworkConfig:
    """The Q-network.

    name: auto (Nature CNN for pixels, MLP otherwise) | nature | mlp.
    dueling: dueling head (Wang et al. 2016). cnn_hidden: width of the CNN's
    fully connected layer. mlp_hidden: widths of the MLP's hidden layers.
    noisy: the head's linear layers are factorised noisy layers (Fortunato et al. 2018), the
    noise resampled before every update; exploration comes from the noise, so set the
    epsilon schedule to 0 (preset=rainbow does); evaluation uses the mean weights.
    noisy_sigma0: the noise's initial scale sigma0 (the paper's 0.5).
    """

    name: NetworkName = NetworkName.auto
    dueling: bool = False
    noisy: bool = False
    noisy_sigma0: float = 0.5
    cnn_hidden: int = 512
    mlp_hidden: List[int] = field(default_factory=lambda: [256, 256])


@dataclass
class ReplayConfig:
    """The replay ring (dqnfast.replay.ReplayRing).

    capacity: stored agent steps over all envs (Atari pixels: 7056 B each).
    n_step: return horizon. num_threads: sampling threads (null or 0 = all
    cores; at most 4 per core and 1024, as envs.num_threads). pin_memory: pinned sample
    buffers (auto = when training on CUDA).
    check_memory: before anything is allocated, refuse a run whose memory budget does not
    fit: ring + envpool's per-env state x envs + sample buffers (+ networks and update
    activations on the CPU, + the action log of envs.resume=replay) must be at most 90% of
    the tightest of MemAvailable, the cgroup v2 and the cgroup v1 limit, minus 512 MiB
    (``dqnfast.training.limits``); with storage=cuda also the frames against 80% of the
    GPU's free memory.
    storage: where frames live: cpu (the C++ ring's host memory, sampled into pinned
    buffers) | cuda (device memory: the C++ ring keeps the indices and the GPU gathers
    the frames, so no frames cross PCIe at sample time; needs device=cuda).
    save: write the ring's contents with every checkpoint (``replay_<steps>.npz`` in the
    run dir; Atari pixels: ~7 KB per stored step), so ``resume`` continues with the same
    memory instead of refilling it with ``algo.learning_starts`` random steps.

    prioritized: prioritized replay (Schaul et al. 2016, proportional; docs/replay.md):
    draw transition i with probability p_i^alpha / sum_k p_k^alpha instead of
    uniformly, p_i = |TD error| + priority_eps as last computed by the learner (a new
    transition starts at the largest priority so far), and weight its loss by the
    importance-sampling weight (N P(i))^-beta normalised by the batch's largest.
    alpha: priority exponent in [0, 1] (0 = uniform over the valid transitions).
    beta0: importance-sampling exponent at the start, in [0, 1]; annealed linearly to 1
    over ``algo.total_steps`` agent steps. priority_eps: added to |TD error| (> 0), so no
    transition's probability reaches zero.
    """

    capacity: int = 1_000_000
    n_step: int = 1
    num_threads: Optional[int] = None
    pin_memory: str = "auto"  # an AutoBool, as a str: see CompileMode
    check_memory: bool = True
    storage: Storage = Storage.cpu
    save: bool = False
    prioritized: bool = False
    alpha: float = 0.6
    beta0: float = 0.4
    priority_eps: float = 1e-6


@dataclass
class OptimConfig:
    """The optimizer.

    name: adam | rmsprop. lr: the learning rate. eps: added to the denominator (outside the
    square root). alpha: RMSprop's smoothing constant of the squared gradients (RMSprop only).
    centered: RMSprop divides by the gradient's estimated variance instead of its second
    moment (RMSprop only).
    """

    name: OptimName = OptimName.adam
    lr: float = 1e-4
    eps: float = 1e-8
    alpha: float = 0.95
    centered: bool = True


@dataclass
class ExploreConfig:
    """Epsilon-greedy exploration, in agent steps counted after learning_starts.

    schedule: linear (start -> end over decay_steps) | exponential
    (end + (start - end) * exp(-t / decay_steps)). start: epsilon when learning starts
    (before that, play is uniform-random). end: the final epsilon. decay_steps: agent steps
    of the decay. eval_epsilon: the final evaluation's epsilon. from_start: count the decay
    from the first agent step instead (CleanRL's schedule): epsilon then falls during the
    warm-up too, whose non-random actions are the untrained network's greedy ones.
    """

    schedule: Schedule = Schedule.linear
    start: float = 1.0
    end: float = 0.1
    decay_steps: int = 1_000_000
    eval_epsilon: float = 0.05
    from_start: bool = False


@dataclass
class ReinforceConfig:
    """REINFORCE (``learner=reinforce``, classic control only; ``dqnfast.agent.reinforce``).

    Shares ``algo.total_steps`` and ``algo.gamma``, ``optim.lr``/``optim.eps`` (always
    Adam), ``network.mlp_hidden`` and ``envs.num_envs`` (episodes per update: one per env).
    policy: mlp (tanh MLP of ``network.mlp_hidden``) | linear (logistic for two actions).
    baseline: none | mean (the batch's mean return-to-go) | value (a learned value head
    fitted to the returns). value_coef: weight of the value head's squared error in the
    loss (baseline=value).
    """

    policy: PolicyKind = PolicyKind.mlp
    baseline: Baseline = Baseline.mean
    value_coef: float = 0.5


@dataclass
class LoggerConfig:
    """Logging and checkpoints (``dqnfast.loggers``).

    log_every: agent steps between metric rows (metrics.csv in the run dir).
    score_window: recent games in score_mean / score_median.
    checkpoint_every: agent steps between checkpoints (0 = only the final one; SIGINT and
    SIGTERM write one too). keep_checkpoints: numbered checkpoints kept in ``checkpoints/``
    (the newest K; ``checkpoint.pt`` is the newest of all).
    progress: tqdm progress bar (false: one log line per metric row instead).
    wandb: also log to Weights & Biases. wandb_project: the W&B project. wandb_entity:
        the W&B entity (null: your default one). wandb_mode: online | offline | disabled;
        online falls back to offline (one line says why) without an API key or
        without a connection. wandb_group: the W&B group (null: the Hydra sweep in
        a multirun, one group per sweep; none for a single run). wandb_tags: added to the
        default tags (game, exp_name). wandb_checkpoint: upload the final
        checkpoint as a W&B artifact. wandb_init_timeout: seconds wandb.init may
        take online before falling back to offline.
    tensorboard: also write TensorBoard event files (run dir ``tensorboard/``).
    """

    log_every: int = 10_000
    score_window: int = 100
    checkpoint_every: int = 1_000_000
    keep_checkpoints: int = 3
    progress: bool = True
    wandb: bool = False
    wandb_project: str = "dqnfast"
    wandb_entity: Optional[str] = None
    wandb_mode: WandbMode = WandbMode.online
    wandb_group: Optional[str] = None
    wandb_tags: List[str] = field(default_factory=list)
    wandb_checkpoint: bool = False
    wandb_init_timeout: float = 30.0
    tensorboard: bool = False


@dataclass
class Config:
    """A whole training run. ``game``/``obs`` are plain keys, the rest groups.

    game: an envpool Atari game by its short name (Pong, Breakout, SpaceInvaders, ...) or
    CartPole, Acrobot, MountainCar. obs: Atari only: pixels (uint8[4,84,84], Nature CNN) |
    ram (the 128-byte console RAM, MLP). seed: seeds envpool (env i: seed + i; the final
    evaluation: seed + 10000 + i; resume r with envs.resume=reseed: seed + 1000000 * r + i),
    torch, numpy and the replay sampler; envpool takes int32 seeds, so a seed is refused
    above 2^31 - 1 minus the largest offset a run derives (room is kept for 100 resumes):
    [0, 2047483640] with 8 envs. device: auto (cuda if available, else cpu) | cpu | cuda |
    cuda:N. exp_name: the run name is {game}__{exp_name}__{seed}__{unix time}. learner:
    dqn | reinforce (policy gradient, classic control only; preset=reinforce).
    torch_threads: torch CPU threads (null, training the Nature CNN on CPU: every core of a
    machine of up to 4 when OpenMP's spin-wait is short, which the command lines arrange, else
    half the cores, as for smaller networks; torch's default on CUDA); at most 4 per core and 1024.
    resume: a run dir or checkpoint file to continue (same run dir, counters and schedules).
    """

    game: str = "Pong"
    obs: ObsKind = ObsKind.pixels
    seed: int = 1
    device: str = "auto"
    exp_name: str = "dqn"
    learner: LearnerName = LearnerName.dqn
    torch_threads: Optional[int] = None
    envs: EnvsConfig = field(default_factory=EnvsConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    reinforce: ReinforceConfig = field(default_factory=ReinforceConfig)
    resume: Optional[str] = None


# ----------------------------------------------------------------- validation
def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive(cfg: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        _check(_finite(v) and v > 0, f"{prefix}.{n}", f"must be > 0, got {v!r}")


def _non_negative(cfg: Any, prefix: str, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        _check(_finite(v) and v >= 0, f"{prefix}.{n}", f"must be >= 0, got {v!r}")


def _integer_ranges(obj: Any, prefix: str = "") -> None:
    """Refuses an integer too large for what it sizes (``_INT_RANGES``, else int64), whatever its section.

    Python integers have no limit, so ``algo.total_steps=99999999999999999999999`` would
    otherwise reach numpy, the ring or envpool and fail there with a traceback.
    """
    for f in fields(obj):
        key, v = prefix + f.name, getattr(obj, f.name)
        if is_dataclass(v):
            _integer_ranges(v, key + ".")
            continue
        if key in _OWN_RANGE_CHECKS:
            continue
        for x in v if isinstance(v, (list, tuple)) else [v]:
            if not isinstance(x, int) or isinstance(x, bool):
                continue
            lo, hi, why = _INT_RANGES.get(key, (None, _INT64_MAX, "a 64-bit integer"))
            _check(
                x <= hi,
                key,
                f"{x} is out of range: use {f'{lo} to {hi}' if lo is not None else f'at most {hi}'} ({why})",
            )


def _choice(cfg: Any, name: str, key: str, kind: type[Choice]) -> None:
    """Checks ``cfg.<name>`` is a member of ``kind`` (any case) and stores the member: parsed once, here."""
    setattr(cfg, name, kind.parse(getattr(cfg, name), key))


# More atoms than any published distributional agent uses (C51: 51; Rainbow ablations: up to 201),
# so a typo (atoms=5100) is refused rather than allocating a huge head.
MAX_ATOMS = 1001
# envpool draws the no-ops from [0, noop_max - 1] (plus one, less one in FIRE games): below 1 that
# range is empty and its C++ distribution crashes the process.
NOOP_MAX_HINT = "must be >= 1 (envpool plays 1 to noop_max no-ops at reset; 1 is the fewest it plays)"


def _protocol(p: ProtocolConfig, prefix: str) -> None:
    _check(
        isinstance(p.noop_max, int) and p.noop_max >= 1, f"{prefix}.noop_max", f"{NOOP_MAX_HINT}, got {p.noop_max!r}"
    )
    _positive(p, prefix, "max_episode_steps")
    r = p.repeat_action_probability
    _check(_finite(r) and 0.0 <= r <= 1.0, f"{prefix}.repeat_action_probability", f"must be in [0, 1], got {r!r}")


def check_learning_starts(cfg: Config) -> None:
    """Refuses a DQN run that ends before ``algo.learning_starts``: it would make no update."""
    a = cfg.algo
    _check(
        cfg.learner != LearnerName.dqn or a.total_steps >= a.learning_starts,
        "algo.total_steps",
        f"{a.total_steps} is below algo.learning_starts={a.learning_starts}: the run would end before its first "
        "update; raise algo.total_steps or lower algo.learning_starts",
    )


def _validate_run(cfg: Config) -> None:
    """The top-level keys: game, obs, seed, device, torch_threads, learner; and every integer's range."""
    _check(isinstance(cfg.game, str) and cfg.game.strip() != "", "game", "must name a game, e.g. game=Pong")
    _integer_ranges(cfg)
    _choice(cfg, "obs", "obs", ObsKind)
    _check(isinstance(cfg.seed, int) and cfg.seed >= 0, "seed", f"must be an integer >= 0, got {cfg.seed!r}")
    dev = str(cfg.device)
    _check(
        dev == "auto" or dev == "cpu" or dev.startswith("cuda") or dev == "mps",
        "device",
        f"must be auto, cpu, cuda or cuda:N, got {dev!r}",
    )
    _check(
        cfg.torch_threads is None or cfg.torch_threads >= 0, "torch_threads", f"must be >= 0, got {cfg.torch_threads!r}"
    )
    _choice(cfg, "learner", "learner", LearnerName)


def _validate_envs(cfg: Config) -> None:
    e = cfg.envs
    _positive(e, "envs", "num_envs", "frame_skip", "stack")
    _check(
        e.stack <= MAX_STACK,
        "envs.stack",
        f"must be in [1, {MAX_STACK}] (the longest stack the ring rebuilds), got {e.stack!r}",
    )
    if e.batch_size:
        _check(
            0 < e.batch_size <= e.num_envs,
            "envs.batch_size",
            f"must be in [1, envs.num_envs={e.num_envs}] (or null for synchronous), got {e.batch_size!r}",
        )
    _check(e.num_threads is None or e.num_threads >= 0, "envs.num_threads", f"must be >= 0, got {e.num_threads!r}")
    _choice(e, "resume", "envs.resume", EnvResume)
    _choice(e, "vectorization", "envs.vectorization", Vectorization)
    _check(
        not (e.resume == EnvResume.replay and e.batch_size and e.batch_size < e.num_envs),
        "envs.resume",
        "replay needs synchronous envs (envs.batch_size null or = envs.num_envs); use envs.resume=reseed with "
        "asynchronous envs",
    )
    _protocol(e.train, "envs.train")
    _protocol(e.eval, "envs.eval")
    _non_negative(e.eval, "envs.eval", "episodes")
    _positive(e.eval, "envs.eval", "num_envs")


def _validate_algo(cfg: Config) -> None:
    a = cfg.algo
    _positive(a, "algo", "total_steps", "batch_size", "replay_ratio", "target_update_period")
    _non_negative(a, "algo", "learning_starts")
    _check(_finite(a.gamma) and 0.0 <= a.gamma <= 1.0, "algo.gamma", f"must be in [0, 1], got {a.gamma!r}")
    _check(_finite(a.tau) and 0.0 < a.tau <= 1.0, "algo.tau", f"must be in (0, 1], got {a.tau!r}")
    _choice(a, "loss", "algo.loss", Loss)
    _check(
        a.max_grad_norm is None or (_finite(a.max_grad_norm) and a.max_grad_norm > 0),
        "algo.max_grad_norm",
        f"must be > 0 or null, got {a.max_grad_norm!r}",
    )
    _choice(a, "compile", "algo.compile", CompileMode)
    _choice(a, "amp", "algo.amp", Amp)
    _choice(a, "channels_last", "algo.channels_last", ChannelsLast)
    _choice(a, "distributional", "algo.distributional", Distributional)
    _check(
        isinstance(a.atoms, int) and 2 <= a.atoms <= MAX_ATOMS,
        "algo.atoms",
        f"must be an integer in [2, {MAX_ATOMS}], got {a.atoms!r}",
    )
    _check(
        _finite(a.v_min) and _finite(a.v_max) and a.v_min < a.v_max,
        "algo.v_min",
        f"the support needs finite v_min < v_max, got v_min={a.v_min!r}, v_max={a.v_max!r}",
    )
    if not cfg.resume:  # a resumed run is checked once its checkpoint is known to fit (components.build)
        check_learning_starts(cfg)


def _validate_network(cfg: Config) -> None:
    n = cfg.network
    _choice(n, "name", "network.name", NetworkName)
    _positive(n, "network", "cnn_hidden")
    _check(
        len(n.mlp_hidden) >= 1 and all(isinstance(h, int) and h > 0 for h in n.mlp_hidden),
        "network.mlp_hidden",
        f"must be a non-empty list of positive widths, got {list(n.mlp_hidden)!r}",
    )
    _check(
        _finite(n.noisy_sigma0) and n.noisy_sigma0 >= 0.0,
        "network.noisy_sigma0",
        f"must be >= 0 (the paper's 0.5), got {n.noisy_sigma0!r}",
    )


def _validate_replay(cfg: Config) -> None:
    r, e, dev = cfg.replay, cfg.envs, str(cfg.device)
    _positive(r, "replay", "capacity", "n_step")
    _check(r.num_threads is None or r.num_threads >= 0, "replay.num_threads", f"must be >= 0, got {r.num_threads!r}")
    _choice(r, "pin_memory", "replay.pin_memory", AutoBool)
    _choice(r, "storage", "replay.storage", Storage)
    _check(
        r.storage != Storage.cuda or dev == "auto" or dev.startswith("cuda"),
        "replay.storage",
        f"cuda storage needs a CUDA device, but device={dev}; use replay.storage=cpu",
    )
    _check(
        cfg.algo.batch_size <= r.capacity,
        "algo.batch_size",
        f"{cfg.algo.batch_size} is bigger than the replay ring (replay.capacity={r.capacity})",
    )
    # prioritized replay
    _check(_finite(r.alpha) and 0.0 <= r.alpha <= 1.0, "replay.alpha", f"must be in [0, 1], got {r.alpha!r}")
    _check(_finite(r.beta0) and 0.0 <= r.beta0 <= 1.0, "replay.beta0", f"must be in [0, 1], got {r.beta0!r}")
    _check(
        _finite(r.priority_eps) and r.priority_eps > 0.0,
        "replay.priority_eps",
        f"must be > 0 (a transition at priority 0 would never be drawn), got {r.priority_eps!r}",
    )
    stack = e.stack if cfg.obs == ObsKind.pixels else 1
    segment = r.capacity // e.num_envs
    need = stack + r.n_step + 1
    _check(
        segment >= need,
        "replay.capacity",
        f"{r.capacity} gives each of the {e.num_envs} envs {segment} slots; need at least {need} "
        f"(stack + n_step + 1), i.e. capacity >= {need * e.num_envs}",
    )


def _validate_optim(cfg: Config) -> None:
    o = cfg.optim
    _choice(o, "name", "optim.name", OptimName)
    _positive(o, "optim", "lr", "eps")
    _check(_finite(o.alpha) and 0.0 <= o.alpha < 1.0, "optim.alpha", f"must be in [0, 1), got {o.alpha!r}")


def _validate_explore(cfg: Config) -> None:
    x = cfg.explore
    _choice(x, "schedule", "explore.schedule", Schedule)
    for k in ("start", "end", "eval_epsilon"):
        v = getattr(x, k)
        _check(_finite(v) and 0.0 <= v <= 1.0, f"explore.{k}", f"must be in [0, 1], got {v!r}")
    _positive(x, "explore", "decay_steps")


def _validate_reinforce(cfg: Config) -> None:
    p = cfg.reinforce
    _choice(p, "policy", "reinforce.policy", PolicyKind)
    _choice(p, "baseline", "reinforce.baseline", Baseline)
    _non_negative(p, "reinforce", "value_coef")


def _validate_logger(cfg: Config) -> None:
    g = cfg.logger
    _positive(g, "logger", "log_every", "score_window", "wandb_init_timeout")
    _non_negative(g, "logger", "checkpoint_every")
    _positive(g, "logger", "keep_checkpoints")
    _choice(g, "wandb_mode", "logger.wandb_mode", WandbMode)
    _check(
        all(isinstance(t, str) and t.strip() and len(t) <= 64 for t in g.wandb_tags),
        "logger.wandb_tags",
        f"must be a list of non-empty tags of at most 64 characters, got {list(g.wandb_tags)!r}",
    )


# The sections in the schema's order: the first wrong key a config has is the one named.
_SECTIONS = (
    _validate_run,
    _validate_envs,
    _validate_algo,
    _validate_network,
    _validate_replay,
    _validate_optim,
    _validate_explore,
    _validate_reinforce,
    _validate_logger,
)


def validate(cfg: Config) -> None:
    """Checks every value that does not need an env or a device, and stores every choice as its Enum member.

    Raises ConfigError naming the first wrong key, section by section (``_SECTIONS``). After it
    every choice of ``cfg`` is a member of its Enum (``algo.compile`` a ``CompileMode``,
    ``replay.pin_memory`` an ``AutoBool``): nothing downstream parses a choice's string again.
    (The game name, the observation kind for the game, the network's fit to the observation
    and the device are resolved by ``dqnfast.config.resolve.resolve`` at start-up, where
    envpool and torch are at hand.)
    """
    for section in _SECTIONS:
        section(cfg)
