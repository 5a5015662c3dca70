"""Train a DQN agent: ``python -m dqnfast.train game=SpaceInvaders``.

The Hydra entry point (configs in ``conf/``, schema in ``dqnfast/config.py``) and a
CleanRL-style loop that reads top to bottom: env setup, act, store, learn, log.
Defaults are the Nature DQN recipe with the double-DQN target; ``preset=nature``
is the 2015 paper, ``preset=quick`` a one-minute CPU smoke run, ``preset=cartpole``
a CartPole-v1 recipe that learns in well under a minute.

Per loop iteration (envpool sync or async, keyed by ``info["env_id"]``):

    recv  -> ring.add(newest frames, actions sent, rewards, flags, first)
          -> epsilon-greedy over all received envs (one forward pass)
    send  -> envpool steps in its threads while we
    learn -> replay_ratio * K / batch_size updates (fractional accumulator)

Units: ``env_steps`` are agent steps summed over envs; ``frames`` = env_steps *
frame_skip. Run outputs (Hydra's run dir): ``metrics.csv``, ``checkpoint.pt`` (the
newest of ``checkpoints/step_*.pt``, see ``dqnfast.checkpoint``), ``replay_*.npz``
(``replay.save``), ``eval.json``, ``eval_scores.png``, ``learning_curve.png`` and
Hydra's ``train.log`` / ``.hydra/``; ``wandb/`` and ``tensorboard/`` with those loggers
(``dqnfast.loggers``: console, metrics.csv, W&B, TensorBoard, one row every
``logger.log_every`` agent steps, the only time metrics leave the device).

Sweeps (``-m``): every job of a Hydra multirun is one call of ``main``, which returns
the objective for sweepers such as Optuna (the final evaluation's mean score). Jobs that
share a machine (joblib) or get a slice of one (Ray ``num_cpus``, SLURM
``cpus_per_task``) size their envpool, sampler and torch threads to their share of the
cores (``job_cores``); W&B groups a sweep's jobs under the sweep's name.

Checkpoints and resume: every ``logger.checkpoint_every`` agent steps, at the end, and
on SIGINT/SIGTERM (a second signal exits at once) the trainer saves everything the loop
needs to go on: networks, optimizer, counters, loop accumulators, every RNG (python,
numpy, torch, the actor's, the replay sampler's) and, with ``envs.resume=replay``, the
action log that restores the envs. ``python -m dqnfast.train resume=<run dir>``
continues in the same run dir. envpool's emulator state cannot be saved, so the envs
come back either re-seeded (``reseed``, default) or by re-playing every action from
the same seed (``replay``: with ``replay.save=true``, a resumed run on CPU computes the
same updates, bit for bit, as one that was never stopped; tests/test_resume.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from dqnfast.config import Config, ConfigError, validate
from dqnfast.loggers import RunInfo, RunLoggers, check_logger_config, eval_media

log = logging.getLogger("dqnfast.train")

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repo's conf/, shipped in wheels
GROUPS = ("envs", "algo", "network", "replay", "optim", "explore", "logger", "preset")


# ------------------------------------------------------------------ start-up
def resolve_device(name: str):
    """``auto`` -> cuda if available else cpu. Raises ConfigError("device") if unusable."""
    import torch

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


def check_config(cfg: Config) -> tuple[str, str]:
    """All start-up checks that need no allocation; returns (task_id, family).

    Raises ConfigError naming the key: value checks (``config.validate``), the game
    name (with close matches), the observation kind for the game, the network's fit.
    """
    from dqnfast.envs import resolve_game
    from dqnfast.networks import spec_for

    validate(cfg)
    try:
        task_id, family = resolve_game(cfg.game)
    except ValueError as e:
        raise ConfigError("game", str(e)) from None
    if family == "atari":
        obs_kind, shape = cfg.obs, ((cfg.envs.stack, 84, 84) if cfg.obs == "pixels" else (128,))
    elif cfg.obs == "ram":
        raise ConfigError("obs", f"{task_id} has vector observations; obs=ram is for Atari games")
    else:
        obs_kind, shape = "vector", (1,)
    try:
        spec_for(cfg.network.name, obs_kind, shape, "uint8", 2)
    except ValueError as e:
        raise ConfigError("network.name", str(e)) from None
    resolve_device(cfg.device)
    check_logger_config(cfg.logger)
    return task_id, family


def run_name(cfg: Config) -> str:
    """CleanRL-style ``{game}__{exp_name}__{seed}__{unix time}``."""
    return f"{cfg.game}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity: SLURM and taskset restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


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

    Updates ``cfg`` and ``config_dict`` (what the checkpoint and W&B record); returns a
    description for the log.
    """
    cpu = resolve_device(cfg.device).type == "cpu"
    if not cfg.envs.num_threads:
        cfg.envs.num_threads = cores
    if not cfg.replay.num_threads:
        cfg.replay.num_threads = cores
    if not cfg.torch_threads:
        cfg.torch_threads = max(1, cores // 2) if cpu else cores
    config_dict.setdefault("envs", {})["num_threads"] = cfg.envs.num_threads
    config_dict.setdefault("replay", {})["num_threads"] = cfg.replay.num_threads
    config_dict["torch_threads"] = cfg.torch_threads
    return f"envpool {cfg.envs.num_threads}, sampler {cfg.replay.num_threads}, torch {cfg.torch_threads}"


def objective(summary: Mapping[str, Any]) -> float:
    """What a sweep optimizes: the final evaluation's mean score, else the last training score."""
    mean = (summary.get("eval") or {}).get("mean")
    if isinstance(mean, (int, float)) and math.isfinite(mean):
        return float(mean)
    return float(summary.get("score_mean", math.nan))


def _mean(xs) -> float:
    return float(statistics.fmean(xs)) if len(xs) else float("nan")


def _median(xs) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


# ----------------------------------------------------------------- evaluation
def evaluate(cfg: Config, network, device, *, seed: int, random_baseline: bool = True) -> dict[str, Any]:
    """Plays ``envs.eval.episodes`` whole games with the eval protocol and ``explore.eval_epsilon``.

    Returns eval.json's dict (``dqnfast.evaluate.evaluate_network``): the trained
    agent's episodes, mean, std, median, min, max, scores, lengths (agent steps),
    epsilon, human_normalized; ``random`` the same for a uniform-random agent on the
    same protocol and seeds (None if ``random_baseline`` is false); ``protocol``.
    """
    from dqnfast.evaluate import evaluate_network, summarize

    ev = cfg.envs.eval
    if ev.episodes <= 0:
        return {**summarize([]), "epsilon": cfg.explore.eval_epsilon, "random": None}
    return evaluate_network(network, game=cfg.game, obs=cfg.obs, envs=cfg.envs, protocol=ev,
                            epsilon=cfg.explore.eval_epsilon, seed=seed, device=device,
                            random_baseline=random_baseline).result


# -------------------------------------------------------------- resume helpers
ENV_RESEED_STRIDE = 1_000_000  # a resumed run's envs (envs.resume=reseed) are seeded seed + stride * resumes


class GracefulStop:
    """SIGINT / SIGTERM: the first asks the loop to checkpoint and stop; a second exits at once.

    ``signum`` is None until a signal arrives. Handlers are installed only in the main
    thread and the previous ones are restored on exit. The handler only sets a flag
    and writes one line with ``os.write`` (safe inside a signal handler).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            os.write(2, f"\n{name} again: exiting now, without a checkpoint\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"\n{name}: writing a checkpoint, then stopping ({name} again exits at once)\n".encode())

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


class ActionLog:
    """Every action sent to a synchronous env batch, uint8[T, num_envs] (one byte per agent step).

    With the env seed this restores the envs exactly on resume (``envs.resume=replay``):
    ALE and envpool's classic control are deterministic for a seed and an action sequence.
    """

    def __init__(self, num_envs: int, rows: np.ndarray | None = None) -> None:
        self.num_envs = num_envs
        self._buf = np.zeros((1024, num_envs), np.uint8)
        self.n = 0
        if rows is not None and len(rows):
            self.extend(np.asarray(rows, np.uint8))

    def extend(self, rows: np.ndarray) -> None:
        while self.n + len(rows) > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self.n: self.n + len(rows)] = rows
        self.n += len(rows)

    def append(self, row: np.ndarray) -> None:
        self.extend(np.asarray(row, np.uint8)[None])

    @property
    def rows(self) -> np.ndarray:
        return self._buf[: self.n]


def _rng_state(actor: Any, ring: Any, device: Any) -> dict[str, Any]:
    import torch

    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "actor_numpy": actor.rng.bit_generator.state,
        "actor_torch": actor.gen.get_state(),
        "replay": int(ring.rng_state),
    }
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], actor: Any, ring: Any, device: Any, *, ring_too: bool) -> None:
    import torch

    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    actor.rng.bit_generator.state = state["actor_numpy"]
    actor.gen.set_state(state["actor_torch"])
    if ring_too:
        ring.rng_state = int(state["replay"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state_all(state["torch_cuda"])


# ---------------------------------------------------------------------- train
def train(cfg: Config, run_dir: str | os.PathLike, *, config_dict: dict | None = None,
          resume: str | os.PathLike | dict | None = None, tracking: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs one training run into ``run_dir``; returns a summary dict.

    cfg: a validated Config (dataclasses). config_dict: the config as saved in the
    checkpoint (default: ``dataclasses.asdict(cfg)``). tracking: what the loggers get
    besides the config: ``group`` and ``tags`` (W&B) and ``hydra`` (a dict added to the
    W&B run config: overrides, sweep dir, job number); ``main`` passes the Hydra sweep's.
    resume: a checkpoint (path or
    loaded dict) to continue from: networks, optimizer, counters, schedules, RNG
    states and loop state are restored; the replay ring is reloaded when it was saved
    (``replay.save``), else refilled with ``algo.learning_starts`` random steps; the
    envs are re-created per ``envs.resume``. Raises ConfigError("resume", ...) for a
    checkpoint of another game, observation type, action count or network.

    The summary holds run_name, env_steps, updates, episodes, train_time, score_mean
    (the last ``logger.score_window`` training games), eval (see ``evaluate``; None when
    interrupted), interrupted (None, or the signal's name: SIGINT/SIGTERM wrote a
    checkpoint and stopped the run early), metrics, checkpoint.
    """
    import torch

    from dqnfast.actor import Actor, EpsilonSchedule
    from dqnfast.checkpoint import (
        CheckpointError, check_compatible, find_checkpoint, load_checkpoint, save_run_checkpoint,
    )
    from dqnfast.envs import GameTracker, frames_of, make_env, observation_of, raw_reward_of, resolve_game
    from dqnfast.learner import Learner, make_optimizer, resolve_amp, resolve_compile
    from dqnfast.networks import make_network, spec_for
    from dqnfast.replay import ReplayFileError, ReplayRing

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp*"):  # left by a run killed mid-write (the real files are intact)
        stale.unlink(missing_ok=True)
    config_dict = config_dict if config_dict is not None else dataclasses.asdict(cfg)
    a, x, lg = cfg.algo, cfg.explore, cfg.logger

    # resume: the checkpoint, and how the envs come back
    ck: dict | None = None
    if resume is not None:
        try:
            ck = resume if isinstance(resume, dict) else load_checkpoint(find_checkpoint(resume))
        except CheckpointError as e:
            raise ConfigError("resume", str(e)) from None
    counters0 = dict(ck["counters"]) if ck else {}
    resumes = int(counters0.get("resumes", 0)) + (1 if ck else 0)
    env_mode = str(cfg.envs.resume).lower()
    ck_envs = (ck or {}).get("envs") or {}
    replay_envs = bool(ck) and env_mode == "replay" and ck_envs.get("actions") is not None \
        and int(ck_envs.get("num_envs", -1)) == cfg.envs.num_envs
    if not ck:
        env_seed = cfg.seed
    elif replay_envs:
        env_seed = int(ck_envs["seed"])
    else:
        env_seed = cfg.seed + ENV_RESEED_STRIDE * resumes

    name = str(ck.get("run_name")) if ck and ck.get("run_name") else run_name(cfg)
    if not ck:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # streams, events and graphs default to the current device
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif device.type == "cpu":
        # leave cores to envpool's threads: torch's spinning OpenMP workers and busy envpool
        # workers on the same cores slow updates down by up to 10x
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))

    # env setup
    if ck and resolve_game(cfg.game)[0] != ck.get("game"):  # the cheap check first; check_compatible does all
        raise ConfigError("resume", f"checkpoint is for {ck.get('game')}, this run is {resolve_game(cfg.game)[0]}")
    env, spec = make_env(cfg.game, cfg.obs, cfg.envs, cfg.envs.train, seed=env_seed)
    net_spec = spec_for(cfg.network.name, spec.obs_kind, spec.obs_shape, spec.frame_dtype.name, spec.num_actions,
                        dueling=cfg.network.dueling, cnn_hidden=cfg.network.cnn_hidden,
                        mlp_hidden=tuple(cfg.network.mlp_hidden))
    ring = None
    replay_file: Path | None = None
    frames_device = device if str(cfg.replay.storage).lower() == "cuda" else None
    if frames_device is not None and device.type != "cuda":
        env.close()
        raise ConfigError("replay.storage", f"cuda storage needs a CUDA device, but this run is on {device}; "
                                            "use replay.storage=cpu")
    try:
        if ck:
            check_compatible(ck, game=spec.task_id, obs_kind=spec.obs_kind, num_actions=spec.num_actions,
                             network=net_spec.to_dict())
            if not all(k in ck for k in ("loop", "rng", "envs")):
                raise ConfigError("resume", "the checkpoint has no training-loop state (an older or hand-made "
                                            "checkpoint): it can be evaluated, not resumed")
            if a.total_steps <= int(counters0["env_steps"]):
                raise ConfigError("resume", f"the run already has {counters0['env_steps']} agent steps and "
                                            f"algo.total_steps={a.total_steps}; set algo.total_steps higher to continue")
            saved = (ck.get("replay") or {}).get("file")
            if cfg.replay.save and saved:
                replay_file = run_dir / saved
                try:
                    ring = ReplayRing.load(replay_file, num_threads=cfg.replay.num_threads or None,
                                           check_memory=cfg.replay.check_memory, frames_device=frames_device,
                                           num_actions=spec.num_actions)
                except (ReplayFileError, FileNotFoundError, MemoryError) as e:
                    raise ConfigError("resume", f"{e}; resume with replay.save=false to refill the ring instead") \
                        from None
                have = (ring.num_envs, ring.n_step, ring.stack, float(ring.gamma))
                want = (spec.num_envs, cfg.replay.n_step, spec.stack, float(a.gamma))
                if have != want:
                    raise ConfigError("resume", "the saved replay ring has (envs, n_step, stack, gamma) = "
                                                f"{have}, this run {want}; keep them, or resume with replay.save=false")
        if ring is None:
            # the ring takes whole per-env segments only
            capacity = max(spec.num_envs, cfg.replay.capacity // spec.num_envs * spec.num_envs)
            if capacity != cfg.replay.capacity:
                log.info("replay.capacity %d is not a multiple of %d envs: the ring holds %d (%d steps per env)",
                         cfg.replay.capacity, spec.num_envs, capacity, capacity // spec.num_envs)
            ring = ReplayRing(
                capacity, spec.num_envs, spec.frame_shape, spec.frame_dtype, stack=spec.stack,
                n_step=cfg.replay.n_step, gamma=a.gamma, seed=cfg.seed + (ENV_RESEED_STRIDE * resumes if ck else 0),
                num_threads=cfg.replay.num_threads or None, check_memory=cfg.replay.check_memory,
                frames_device=frames_device, num_actions=spec.num_actions,
            )
    except MemoryError as e:
        env.close()
        raise ConfigError("replay.capacity", str(e)) from None
    except CheckpointError as e:
        env.close()
        raise ConfigError("resume", str(e)) from None
    except BaseException:
        env.close()
        raise
    online = make_network(net_spec).to(device)
    target = make_network(net_spec).to(device)
    if a.channels_last and net_spec.kind == "nature":
        online, target = online.to(memory_format=torch.channels_last), target.to(memory_format=torch.channels_last)
    target.load_state_dict(online.state_dict())
    compile_mode = resolve_compile(a.compile, device)
    amp_dtype = resolve_amp(a.amp)
    optimizer = make_optimizer(online.parameters(), cfg.optim, device=device, compile_mode=compile_mode)
    learner = Learner(
        online, target, optimizer, double=a.double, loss=a.loss.lower(), max_grad_norm=a.max_grad_norm,
        target_update_period=a.target_update_period, tau=a.tau, device=device,
        compile=compile_mode, amp_dtype=amp_dtype,
    )
    actor = Actor(online, spec.num_actions, device, seed=cfg.seed, amp_dtype=amp_dtype, compile_mode=compile_mode)
    schedule = EpsilonSchedule(x.schedule.lower(), x.start, x.end, x.decay_steps, a.learning_starts, x.eval_epsilon)
    pin = str(cfg.replay.pin_memory).lower()
    pin = device.type == "cuda" if pin == "auto" else (pin == "true" and torch.cuda.is_available())
    pin = pin and frames_device is None  # device frames: the ring stages its small host arrays itself
    use_events = pin and device.type == "cuda"
    buffers = [ring.make_batch(a.batch_size, pin_memory=pin) for _ in range(2)]
    copied = [None, None]  # CUDA events: a pinned buffer is refilled only after its copy finished
    tracker = GameTracker(spec.num_envs)
    scores: deque[float] = deque(maxlen=lg.score_window)
    lengths: deque[int] = deque(maxlen=lg.score_window)
    ckpt_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.csv"
    record_actions = env_mode == "replay" and not spec.is_async
    actions_log = ActionLog(spec.num_envs) if record_actions else None

    # loop state (restored on resume)
    last_action = np.zeros(spec.num_envs, np.int64)
    env_steps = episodes = refill_steps = 0
    update_budget = 0.0  # updates owed: replay_ratio / batch_size per agent step
    can_sample = False
    loss_sum = q_sum = None
    n_metrics = 0
    next_log, next_ckpt = lg.log_every, (lg.checkpoint_every or math.inf)
    elapsed0 = 0.0  # training seconds before this segment (resumed runs)
    epsilon = 1.0
    refill_left = 0
    if ck:
        was = str(((ck.get("config") or {}).get("optim") or {}).get("name", cfg.optim.name)).lower()
        if was != str(cfg.optim.name).lower():
            env.close()
            raise ConfigError("resume", f"the checkpoint's optimizer is {was}, this run's is {cfg.optim.name}")
        try:
            online.load_state_dict(ck["online"])
            target.load_state_dict(ck["target"])
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
            optimizer.load_state_dict(ck["optimizer"])
            for g, h in zip(optimizer.param_groups, hyper):  # optim.* given on resume win over the saved ones
                g.update(h)
                for p in g["params"]:  # a capturable/fused step keeps its counter on the device
                    st = optimizer.state.get(p, {})
                    if (g.get("capturable") or g.get("fused")) and torch.is_tensor(st.get("step")):
                        st["step"] = st["step"].to(p.device)
        except (RuntimeError, ValueError, KeyError) as e:
            env.close()
            raise ConfigError("resume", f"the checkpoint's weights do not fit this network "
                                        f"({' '.join(str(e).split())[:200]})") from None
        loop = ck["loop"]
        env_steps, episodes = int(counters0["env_steps"]), int(counters0["episodes"])
        refill_steps = int(counters0.get("refill_steps", 0))
        learner.num_updates, learner.num_syncs = int(counters0["updates"]), int(counters0.get("syncs", 0))
        update_budget, can_sample = float(loop["update_budget"]), bool(loop["can_sample"])
        n_metrics = int(loop["n_metrics"])
        if n_metrics:
            loss_sum, q_sum = loop["loss_sum"].to(device), loop["q_sum"].to(device)
        next_log = int(loop["next_log"])
        while next_log <= env_steps:  # logger.log_every changed on resume
            next_log += lg.log_every
        next_ckpt = env_steps + lg.checkpoint_every if lg.checkpoint_every else math.inf
        if loop.get("next_ckpt") is not None and lg.checkpoint_every == int(loop.get("checkpoint_every", -1)):
            next_ckpt = int(loop["next_ckpt"])
        elapsed0 = float(loop["time"])
        epsilon = float(ck.get("epsilon", 1.0))
        scores.extend(float(s) for s in loop["scores"])
        lengths.extend(int(n) for n in loop["lengths"])
        _set_rng_state(ck["rng"], actor, ring, device, ring_too=replay_file is not None)
        if replay_envs:
            last_action[:] = loop["last_action"].numpy()
            tracker.score[:] = loop["tracker_score"].numpy()
            tracker.length[:] = loop["tracker_length"].numpy()
            tracker.started[:] = loop["tracker_started"].numpy()
        if replay_file is None:
            refill_left = a.learning_starts
        log.info("resume %s from %s at %d agent steps (%d updates, %d games, eps %.4f); resume #%d",
                 name, ck.get("_path", "the checkpoint"), env_steps, learner.num_updates, episodes, epsilon, resumes)
        if replay_file is not None:
            log.info("replay: reloaded %s (%d stored steps, sampler state restored)", replay_file.name, len(ring))
        else:
            log.info("replay: %s, so the ring starts empty and is refilled with algo.learning_starts=%d "
                     "uniform-random agent steps before learning resumes (not counted in env_steps)",
                     "not saved with the checkpoint" if not saved else "replay.save=false", a.learning_starts)

    log.info("run %s: %s (%s, %s obs %s, %d actions) on %s, %d envs%s; network %s%s; replay %d x %s %s",
             name, spec.task_id, spec.family, spec.obs_kind, spec.obs_shape, spec.num_actions, device,
             spec.num_envs, f" async batch {spec.batch_size}" if spec.is_async else "", net_spec.kind,
             " dueling" if net_spec.dueling else "", ring.capacity, spec.frame_shape, spec.frame_dtype)
    log.info("run dir %s", run_dir)

    def checkpoint() -> Path:
        """Saves the ring (replay.save), then the checkpoint (numbered + checkpoint.pt), keeps the newest K."""
        nonlocal replay_file
        saved_ring = None
        if cfg.replay.save:
            saved_ring = ring.save(run_dir / f"replay_{env_steps:012d}.npz")
        counters = {"env_steps": env_steps, "frames": env_steps * spec.frame_skip, "updates": learner.num_updates,
                    "episodes": episodes, "seed": cfg.seed, "syncs": learner.num_syncs, "resumes": resumes,
                    "refill_steps": refill_steps}
        cpu = lambda t: t.detach().cpu() if t is not None else None  # noqa: E731
        payload = {
            "online": online.state_dict(), "target": target.state_dict(), "optimizer": optimizer.state_dict(),
            "counters": counters, "config": config_dict, "game": spec.task_id,
            "obs": {"kind": spec.obs_kind, "shape": list(spec.obs_shape), "dtype": spec.frame_dtype.name},
            "num_actions": spec.num_actions, "network": net_spec.to_dict(), "run_name": name, "epsilon": epsilon,
            "loop": {
                "update_budget": update_budget, "can_sample": can_sample, "n_metrics": n_metrics,
                "loss_sum": cpu(loss_sum), "q_sum": cpu(q_sum), "next_log": next_log,
                "next_ckpt": None if next_ckpt == math.inf else int(next_ckpt),
                "checkpoint_every": lg.checkpoint_every, "time": elapsed0 + time.perf_counter() - start,
                "scores": list(scores), "lengths": list(lengths),
                "last_action": torch.from_numpy(last_action.copy()),
                "tracker_score": torch.from_numpy(tracker.score.copy()),
                "tracker_length": torch.from_numpy(tracker.length.copy()),
                "tracker_started": torch.from_numpy(tracker.started.copy()),
            },
            "rng": _rng_state(actor, ring, device),
            "envs": {"mode": env_mode, "seed": env_seed, "num_envs": spec.num_envs,
                     "actions": torch.from_numpy(actions_log.rows.copy()) if actions_log is not None else None},
            "replay": {"file": saved_ring.name if saved_ring else None},
        }
        path = save_run_checkpoint(run_dir, payload, env_steps=env_steps, keep=lg.keep_checkpoints)
        for old in run_dir.glob("replay_*.npz"):  # only the ring that checkpoint.pt refers to is kept
            if saved_ring is None or old.name != saved_ring.name:
                old.unlink(missing_ok=True)
        replay_file = saved_ring
        return path

    # log: console, metrics.csv (kept up to the checkpoint on resume), W&B / TensorBoard if asked
    tracking = dict(tracking or {})
    info = RunInfo(run_dir, name, game=spec.task_id,
                   config={**config_dict, **({"hydra": tracking["hydra"]} if tracking.get("hydra") else {})},
                   group=tracking.get("group"), tags=[cfg.exp_name, *tracking.get("tags", ())], resume=bool(ck))
    try:
        loggers = RunLoggers(lg, info, total_steps=a.total_steps, start_step=env_steps, desc=spec.task_id)
    except BaseException:
        env.close()
        raise
    start = last_time = time.perf_counter()
    last_steps = env_steps

    def log_row() -> dict[str, Any]:
        nonlocal loss_sum, q_sum, n_metrics, last_time, last_steps
        now = time.perf_counter()
        row = {
            "env_steps": env_steps,
            "frames": env_steps * spec.frame_skip,
            "episodes": episodes,
            "score_mean": _mean(scores),
            "score_median": _median(scores),
            "episode_length_mean": _mean(lengths),
            # host sync: only here, at log time
            "loss": (loss_sum / n_metrics).item() if n_metrics else float("nan"),
            "q_mean": (q_sum / n_metrics).item() if n_metrics else float("nan"),
            "epsilon": epsilon,
            "sps": (env_steps - last_steps) / max(now - last_time, 1e-9),
            "time": elapsed0 + now - start,
            "updates": learner.num_updates,
        }
        loggers.log_metrics(row)  # metrics.csv, console, W&B, TensorBoard
        loss_sum = q_sum = None
        n_metrics = 0
        last_time, last_steps = now, env_steps
        return row

    stop = GracefulStop()
    try:
        with stop:
            # env start: fresh, or fast-forwarded by replaying every recorded action (exact resume)
            env.async_reset()
            if replay_envs:
                rows = ck_envs["actions"].numpy()
                t0 = time.perf_counter()
                for row in rows:
                    ids = env.recv()[4]["env_id"]
                    env.send(row[ids].astype(np.int32), ids)
                    if stop.signum:
                        break
                actions_log.extend(rows)
                log.info("envs: restored by replaying %d recorded steps of %d envs from seed %d in %.1f s",
                         len(rows), spec.num_envs, env_seed, time.perf_counter() - t0)
            elif ck:
                log.info("envs: re-created with seed %d (envs.resume=%s%s); games in progress at the checkpoint "
                         "are dropped", env_seed, env_mode, "" if env_mode == "reseed" else
                         ", but the checkpoint has no usable action log")
            while env_steps < a.total_steps and not stop.signum:
                obs, reward, terminated, truncated, info = env.recv()
                env_id = info["env_id"]
                elapsed = info["elapsed_step"]
                k = len(env_id)
                refilling = refill_left > 0

                # store: the newest frame of each result, with the action that produced it
                ring.add(env_id, frames_of(obs, info, spec.obs_kind), last_action[env_id], reward,
                         terminated, truncated, elapsed == 0)
                for _, score, length in tracker.update(env_id, raw_reward_of(reward, info), elapsed):
                    if not refilling:  # games of the random refill after a resume are not the agent's
                        scores.append(score)
                        lengths.append(length)
                        episodes += 1

                # act
                if not refilling:
                    epsilon = schedule(env_steps)
                actions = actor.act(observation_of(obs, info, spec.obs_kind), 1.0 if refilling else epsilon)
                env.send(actions, env_id)  # envpool steps in its threads while we learn
                last_action[env_id] = actions
                if actions_log is not None:
                    actions_log.append(last_action)
                if refilling:  # refill the ring after a resume without a saved ring: no counters, no updates
                    refill_left -= k
                    refill_steps += k
                    if refill_left <= 0:
                        log.info("replay: refilled with %d random agent steps; learning resumes", a.learning_starts)
                    continue
                env_steps += k
                loggers.progress(k)

                # learn
                if env_steps >= a.learning_starts and (can_sample or ring.num_valid() > 0):
                    can_sample = True
                    update_budget += k * a.replay_ratio / a.batch_size
                    while update_budget >= 1.0:
                        update_budget -= 1.0
                        i = learner.num_updates % 2
                        if copied[i] is not None:
                            copied[i].synchronize()
                        batch = ring.sample(a.batch_size, out=buffers[i]).to(device)
                        if use_events:
                            copied[i] = torch.cuda.Event()
                            copied[i].record(torch.cuda.current_stream(device))
                        metrics = learner.update(batch)
                        loss_sum = metrics["loss"] if loss_sum is None else loss_sum + metrics["loss"]
                        q_sum = metrics["q_mean"] if q_sum is None else q_sum + metrics["q_mean"]
                        n_metrics += 1

                # log
                if env_steps >= next_log:
                    log_row()
                    while next_log <= env_steps:
                        next_log += lg.log_every
                if env_steps >= next_ckpt:
                    checkpoint()
                    while next_ckpt <= env_steps:
                        next_ckpt += lg.checkpoint_every
            if stop.signum:
                # no metrics row here: the partial averages go into the checkpoint, so a resumed
                # run writes exactly the rows an uninterrupted one would
                path = checkpoint()
                log.warning("%s at %d agent steps: checkpoint written to %s; continue with: "
                            "python -m dqnfast.train resume=%s", stop.name, env_steps, path, run_dir)
            else:
                if n_metrics or last_steps != env_steps:
                    log_row()
                # final checkpoint (still under the signal handler: a Ctrl-C cannot cut it in half)
                checkpoint()
    except BaseException as e:  # the W&B run is marked failed (130: interrupted)
        loggers.close(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    finally:
        loggers.console.close()  # the progress bar ends with the loop; the other loggers get the evaluation
        env.close()

    train_time = time.perf_counter() - start
    summary = {
        "run_name": name, "env_steps": env_steps, "updates": learner.num_updates, "episodes": episodes,
        "train_time": train_time, "score_mean": _mean(scores), "eval": None, "interrupted": stop.name or None,
        "metrics": str(metrics_path), "checkpoint": str(ckpt_path),
    }
    if stop.signum:
        loggers.close(exit_code=128 + stop.signum)
        return summary

    # final evaluation: trained vs random, eval.json and the two plots, then to the loggers
    try:
        result = _final_evaluation(cfg, online, device, spec, run_dir, metrics_path, ckpt_path, name=name,
                                   env_steps=env_steps, updates=learner.num_updates, episodes=episodes,
                                   train_time=train_time, trained_steps=env_steps - counters0.get("env_steps", 0),
                                   scores=scores)
        loggers.log_eval(result, step=env_steps, media=eval_media(run_dir))
        mean = result.get("mean")
        loggers.log_checkpoint(ckpt_path, step=env_steps, metadata={"run_name": name, **(
            {"eval_mean": mean} if isinstance(mean, (int, float)) and math.isfinite(mean) else {})})
    except BaseException as e:
        loggers.close(exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)
        raise
    loggers.close()
    summary["eval"] = result
    return summary


def _final_evaluation(cfg: Config, online: Any, device: Any, spec: Any, run_dir: Path, metrics_path: Path,
                      ckpt_path: Path, *, name: str, env_steps: int, updates: int, episodes: int, train_time: float,
                      trained_steps: int, scores: Any) -> dict[str, Any]:
    """Logs the training summary, evaluates (trained vs random), writes eval.json and the plots."""
    log.info("trained %d agent steps (%d frames), %d updates, %d games in %.1f s (%.0f steps/s); last %d games: "
             "mean score %.2f", env_steps, env_steps * spec.frame_skip, updates, episodes, train_time,
             trained_steps / max(train_time, 1e-9), len(scores), _mean(scores))
    result = evaluate(cfg, online, device, seed=cfg.seed + 10_000)
    result.update(game=spec.task_id, run_name=name, env_steps=env_steps, frames=env_steps * spec.frame_skip,
                  updates=updates, checkpoint=str(ckpt_path))
    from dqnfast.evaluate import write_json, write_plots

    write_json(result, run_dir / "eval.json")
    try:
        write_plots(result, run_dir, metrics_path, frame_skip=spec.frame_skip)
    except Exception as e:  # a plot must never lose a finished run
        log.warning("plots: %s", " ".join(str(e).split()))
    rnd = result.get("random") or {}
    log.info("evaluation: %d games, epsilon %.3f: mean score %.2f, median %.2f (random agent: %.2f)",
             len(result["scores"]), result["epsilon"], result["mean"], result["median"], rnd.get("mean", math.nan))
    return result


# ------------------------------------------------------------------------ CLI
def _fail(err: ConfigError) -> None:
    msg = " ".join(str(err).split())  # one line, whatever the message held
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def to_config(cfg: Any) -> Config:
    """A Hydra DictConfig (typed by the Config schema) -> Config dataclasses."""
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # composed without the schema: type it now
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    return obj


def _register_configs() -> None:
    """Types the composed config: ``config_schema`` comes first in conf/config.yaml's defaults."""
    ConfigStore.instance().store(name="config_schema", node=Config)


_register_configs()


def _preflight(argv: list[str]) -> None:
    """One-line errors, before Hydra, for overrides Hydra would report in many lines.

    Unknown config-group options (``network=foo``), unknown keys and values of the
    wrong type (``optim.lr=abc``), every value of a sweep; values are checked by
    ``config.validate`` once the run starts.
    """
    from dqnfast.overrides import check_overrides

    try:
        check_overrides(argv, Config, hint="see python -m dqnfast.train --cfg job", groups=GROUPS,
                        conf_dir=CONF_DIR)
    except ConfigError as e:
        _fail(e)


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out += _flat_keys(v, key) if isinstance(v, dict) else [key]
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def resume_config(cfg: DictConfig, saved: dict, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """The config of a resumed run: the checkpoint's config, then this command line's overrides.

    cfg: what Hydra composed from this command line; saved: the checkpoint's config
    (a plain dict); overrides: this command line's overrides (``key=value`` strings).
    Each overridden key takes its value from ``cfg`` (so Hydra has typed it); a group
    option (``optim=rmsprop``) replaces its section; a preset sets the keys it names.
    Returns (config, ["key: old -> new", ...]).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    base = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(saved))
    before = OmegaConf.to_container(base, resolve=True)
    keys: list[str] = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key == "preset" and o.value():
            preset = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "preset" / f"{o.value()}.yaml"))
            for d in preset.pop("defaults", None) or []:  # "override /optim: rmsprop"
                keys += [str(k).split("/")[-1] for k in (d if isinstance(d, dict) else {})]
            keys += _flat_keys(preset)
            continue
        if key in ("resume", "preset") or key.startswith("hydra") or o.is_delete():
            continue
        keys.append(key)
    for key in sorted(set(keys), key=lambda k: (k.count("."), k)):  # sections first, then single keys
        value = OmegaConf.select(cfg, key)
        if isinstance(value, DictConfig):  # a whole section: every key of it is set
            value = OmegaConf.to_container(value)
        OmegaConf.update(base, key, value, merge=True)
    after = OmegaConf.to_container(base, resolve=True)
    fb, fa = _flatten(before), _flatten(after)
    changes = [f"{k}: {fb.get(k)!r} -> {fa[k]!r}" for k in sorted(fa) if k != "resume" and fb.get(k) != fa[k]]
    return base, changes


def _resume_run(cfg: DictConfig, conf: Config) -> tuple[Config, dict, dict, Path]:
    """``resume=<run dir or checkpoint>``: (config, config dict, checkpoint, run dir). Raises ConfigError("resume")."""
    from dqnfast.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, run_dir_of

    try:
        path = find_checkpoint(conf.resume)
        ck = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError("resume", str(e)) from None
    ck["_path"] = str(path)
    saved = dict(ck.get("config") or {})
    saved.pop("resume", None)
    try:
        merged, changes = resume_config(cfg, saved, list(HydraConfig.get().overrides.task))
    except Exception as e:  # a config from another dqnfast version
        raise ConfigError("resume", f"cannot use the checkpoint's config ({' '.join(str(e).split())})") from None
    merged.resume = str(path)
    for c in changes:
        log.info("resume: changed %s", c)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if run_dir.resolve() != run_dir_of(path):
        log.info("resume: writing to %s (the checkpoint's run is %s)", run_dir, run_dir_of(path))
    return to_config(merged), OmegaConf.to_container(merged, resolve=True), ck, run_dir


def _tracking(conf: Config, config_dict: dict) -> dict[str, Any]:
    """The Hydra job as the loggers see it; in a multirun also sizes the job's threads.

    Returns ``train``'s ``tracking``: W&B group = the sweep (``DATE_TIME`` of
    ``multirun/DATE/TIME``) in a multirun, tags, and the overrides / sweep dir / job
    number for the W&B run config.
    """
    hc = HydraConfig.get()
    hydra_info: dict[str, Any] = {"overrides": list(hc.overrides.task)}
    tracking: dict[str, Any] = {"group": None, "tags": [], "hydra": hydra_info}
    if hc.mode != RunMode.MULTIRUN:
        return tracking
    sweep = Path(str(hc.sweep.dir))
    tracking["group"] = f"{sweep.parent.name}_{sweep.name}" if sweep.parent.name else sweep.name
    tracking["tags"] = ["multirun"]
    hydra_info.update(sweep_dir=str(sweep), job_num=int(hc.job.num))
    launcher = OmegaConf.to_container(hc.launcher, resolve=False) if hc.get("launcher") else None
    total = available_cores()
    cores = job_cores(launcher, total)
    if cores is not None:
        threads = share_cores(conf, config_dict, cores)
        n = launcher.get("n_jobs") if str(launcher.get("_target_", "")).endswith("JoblibLauncher") else None
        where = f"{total} cores, {n} jobs at once" if n is not None else f"{total} cores here"
        log.info("threads: %d core(s) for this job (%s): %s", cores, where, threads)
    return tracking


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """``python -m dqnfast.train [overrides]``: Hydra CLI (``--help``, ``--cfg job``, ``-m``).

    Returns the run's objective for sweepers (``objective``: the final evaluation's
    mean score). ``resume=<run dir>`` continues that run (see ``train``); SIGINT/SIGTERM
    write a checkpoint and exit with status 128 + the signal number (130, 143).
    """
    try:
        conf = to_config(cfg)
        ck = None
        run_dir = HydraConfig.get().runtime.output_dir
        config_dict = None
        if conf.resume:
            conf, config_dict, ck, run_dir = _resume_run(cfg, conf)
        check_config(conf)
        if config_dict is None:
            config_dict = OmegaConf.to_container(cfg, resolve=True)
        tracking = _tracking(conf, config_dict)
        summary = train(conf, run_dir, config_dict=config_dict, resume=ck, tracking=tracking)
    except ConfigError as e:
        _fail(e)
    except KeyboardInterrupt:
        print("error: interrupted (the last checkpoint is complete)", file=sys.stderr)
        sys.exit(130)
    if summary.get("interrupted"):
        sig = signal.Signals[summary["interrupted"]]
        print(f"{sig.name}: stopped at {summary['env_steps']} agent steps; checkpoint {summary['checkpoint']}; "
              f"continue with: python -m dqnfast.train resume={run_dir}", file=sys.stderr)
        sys.exit(128 + int(sig))
    return objective(summary)


def _resume_preflight(argv: list[str]) -> list[str]:
    """``resume=X``: checks X before Hydra creates any folder, and runs in X's run dir.

    Adds ``hydra.run.dir=<run dir>`` (unless given) and keeps the run's own ``.hydra/``
    by writing this invocation's under ``.hydra/resume-<unix time>/``.
    """
    from dqnfast.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, run_dir_of

    given = [a.split("=", 1)[1] for a in argv if a.startswith("resume=")]
    if not given or given[-1] in ("", "null", "None"):
        return argv
    try:
        path = find_checkpoint(given[-1])
        load_checkpoint(path)  # a corrupt file fails here, before Hydra writes into the run dir
    except CheckpointError as e:
        _fail(ConfigError("resume", str(e)))
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        extra.append(f"hydra.run.dir={run_dir_of(path)}")
    if not any(a.startswith("hydra.output_subdir=") for a in argv):
        extra.append(f"hydra.output_subdir=.hydra/resume-{int(time.time())}")
    return argv + extra


def cli() -> None:
    """Console entry point: pre-flight checks, then Hydra."""
    _preflight(sys.argv[1:])
    sys.argv = sys.argv[:1] + _resume_preflight(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
