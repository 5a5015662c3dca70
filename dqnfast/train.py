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
frame_skip. Run outputs (Hydra's run dir): ``metrics.csv``, ``checkpoint.pt``,
``eval.json`` and Hydra's ``train.log`` / ``.hydra/``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dqnfast.config import Config, ConfigError, validate

log = logging.getLogger("dqnfast.train")

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repo's conf/, shipped in wheels
GROUPS = ("envs", "algo", "network", "replay", "optim", "explore", "logger", "preset")
METRIC_COLUMNS = (
    "env_steps", "frames", "episodes", "score_mean", "score_median", "episode_length_mean",
    "loss", "q_mean", "epsilon", "sps", "time", "updates",
)


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
    return task_id, family


def run_name(cfg: Config) -> str:
    """CleanRL-style ``{game}__{exp_name}__{seed}__{unix time}``."""
    return f"{cfg.game}__{cfg.exp_name}__{cfg.seed}__{int(time.time())}"


def _mean(xs) -> float:
    return float(statistics.fmean(xs)) if len(xs) else float("nan")


def _median(xs) -> float:
    return float(statistics.median(xs)) if len(xs) else float("nan")


# ----------------------------------------------------------------- evaluation
def evaluate(cfg: Config, network, device, *, seed: int) -> dict[str, Any]:
    """Plays ``envs.eval.episodes`` whole games with the eval protocol and ``explore.eval_epsilon``.

    Returns {"scores": [...], "lengths": [...] (agent steps), "mean", "median", "epsilon"}.
    """
    from dqnfast.actor import Actor, run_episodes
    from dqnfast.envs import make_env

    ev = cfg.envs.eval
    if ev.episodes <= 0:
        return {"scores": [], "lengths": [], "mean": float("nan"), "median": float("nan"),
                "epsilon": cfg.explore.eval_epsilon}
    n = min(ev.num_envs, ev.episodes)
    env, spec = make_env(cfg.game, cfg.obs, cfg.envs, ev, seed=seed, num_envs=n, batch_size=n)
    actor = Actor(network, spec.num_actions, device, seed=seed)
    was_training = network.training
    network.eval()
    try:
        scores, lengths = run_episodes(env, spec, actor, cfg.explore.eval_epsilon, ev.episodes)
    finally:
        network.train(was_training)
        env.close()
    return {"scores": scores, "lengths": lengths, "mean": _mean(scores), "median": _median(scores),
            "epsilon": cfg.explore.eval_epsilon}


# ---------------------------------------------------------------------- train
def train(cfg: Config, run_dir: str | os.PathLike, *, config_dict: dict | None = None) -> dict[str, Any]:
    """Runs one training run into ``run_dir``; returns a summary dict.

    cfg: a validated Config (dataclasses). config_dict: the config as saved in the
    checkpoint (default: ``dataclasses.asdict(cfg)``). The summary holds env_steps,
    updates, episodes, eval (see ``evaluate``), run_name and the output paths.
    """
    import torch

    from dqnfast.actor import Actor, EpsilonSchedule
    from dqnfast.envs import GameTracker, frames_of, make_env, observation_of, raw_reward_of
    from dqnfast.learner import Learner, make_optimizer, resolve_compile, save_checkpoint
    from dqnfast.networks import make_network, spec_for
    from dqnfast.replay import ReplayRing

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(cfg)
    config_dict = config_dict if config_dict is not None else dataclasses.asdict(cfg)
    a, x, lg = cfg.algo, cfg.explore, cfg.logger
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif device.type == "cpu":
        # leave cores to envpool's threads: torch's spinning OpenMP workers and busy envpool
        # workers on the same cores slow updates down by up to 10x
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))

    # env setup
    env, spec = make_env(cfg.game, cfg.obs, cfg.envs, cfg.envs.train, seed=cfg.seed)
    try:
        ring = ReplayRing(
            cfg.replay.capacity, spec.num_envs, spec.frame_shape, spec.frame_dtype, stack=spec.stack,
            n_step=cfg.replay.n_step, gamma=a.gamma, seed=cfg.seed,
            num_threads=cfg.replay.num_threads or None, check_memory=cfg.replay.check_memory,
        )
    except MemoryError as e:
        env.close()
        raise ConfigError("replay.capacity", str(e)) from None
    net_spec = spec_for(cfg.network.name, spec.obs_kind, spec.obs_shape, spec.frame_dtype.name, spec.num_actions,
                        dueling=cfg.network.dueling, cnn_hidden=cfg.network.cnn_hidden,
                        mlp_hidden=tuple(cfg.network.mlp_hidden))
    online = make_network(net_spec).to(device)
    target = make_network(net_spec).to(device)
    target.load_state_dict(online.state_dict())
    optimizer = make_optimizer(online.parameters(), cfg.optim)
    learner = Learner(
        online, target, optimizer, double=a.double, loss=a.loss.lower(), max_grad_norm=a.max_grad_norm,
        target_update_period=a.target_update_period, tau=a.tau, device=device,
        compile=resolve_compile(a.compile, device),
    )
    actor = Actor(online, spec.num_actions, device, seed=cfg.seed)
    schedule = EpsilonSchedule(x.schedule.lower(), x.start, x.end, x.decay_steps, a.learning_starts, x.eval_epsilon)
    pin = str(cfg.replay.pin_memory).lower()
    pin = device.type == "cuda" if pin == "auto" else (pin == "true" and torch.cuda.is_available())
    use_events = pin and device.type == "cuda"
    buffers = [ring.make_batch(a.batch_size, pin_memory=pin) for _ in range(2)]
    copied = [None, None]  # CUDA events: a pinned buffer is refilled only after its copy finished
    tracker = GameTracker(spec.num_envs)
    scores: deque[float] = deque(maxlen=lg.score_window)
    lengths: deque[int] = deque(maxlen=lg.score_window)
    ckpt_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.csv"

    log.info("run %s: %s (%s, %s obs %s, %d actions) on %s, %d envs%s; network %s%s; replay %d x %s %s",
             name, spec.task_id, spec.family, spec.obs_kind, spec.obs_shape, spec.num_actions, device,
             spec.num_envs, f" async batch {spec.batch_size}" if spec.is_async else "", net_spec.kind,
             " dueling" if net_spec.dueling else "", ring.capacity, spec.frame_shape, spec.frame_dtype)
    log.info("run dir %s", run_dir)

    wandb_run = None
    if lg.wandb:
        import wandb  # lazily: only when tracking

        wandb_run = wandb.init(project=lg.wandb_project, entity=lg.wandb_entity, name=name,
                               config=config_dict, dir=str(run_dir))

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_path, online=online, target=target, optimizer=optimizer,
            counters={"env_steps": env_steps, "frames": env_steps * spec.frame_skip, "updates": learner.num_updates,
                      "episodes": episodes, "seed": cfg.seed},
            config=config_dict, game=spec.task_id, network=net_spec.to_dict(),
        )

    csv_file = open(metrics_path, "w", newline="")
    writer = csv.DictWriter(csv_file, fieldnames=METRIC_COLUMNS)
    writer.writeheader()
    csv_file.flush()

    from tqdm import tqdm

    pbar = tqdm(total=a.total_steps, unit="step", disable=not lg.progress, dynamic_ncols=True, mininterval=1.0,
                desc=spec.task_id, file=sys.stderr)
    last_action = np.zeros(spec.num_envs, np.int64)
    env_steps = episodes = 0
    update_budget = 0.0  # updates owed: replay_ratio / batch_size per agent step
    can_sample = False
    loss_sum = q_sum = None
    n_metrics = 0
    next_log, next_ckpt = lg.log_every, (lg.checkpoint_every or math.inf)
    start = last_time = time.perf_counter()
    last_steps = 0
    epsilon = 1.0

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
            "time": now - start,
            "updates": learner.num_updates,
        }
        writer.writerow(row)
        csv_file.flush()
        pbar.set_postfix(sps=f"{row['sps']:.0f}", eps=f"{epsilon:.3f}", score=f"{row['score_mean']:.1f}",
                         loss=f"{row['loss']:.4f}", refresh=False)
        if wandb_run is not None:
            wandb_run.log({"charts/episodic_return": row["score_mean"], "charts/episodic_length":
                           row["episode_length_mean"], "charts/epsilon": epsilon, "charts/SPS": row["sps"],
                           "losses/td_loss": row["loss"], "losses/q_values": row["q_mean"],
                           "charts/episodes": episodes, "charts/updates": learner.num_updates}, step=env_steps)
        loss_sum = q_sum = None
        n_metrics = 0
        last_time, last_steps = now, env_steps
        return row

    try:
        env.async_reset()
        while env_steps < a.total_steps:
            obs, reward, terminated, truncated, info = env.recv()
            env_id = info["env_id"]
            elapsed = info["elapsed_step"]
            k = len(env_id)

            # store: the newest frame of each result, with the action that produced it
            ring.add(env_id, frames_of(obs, info, spec.obs_kind), last_action[env_id], reward,
                     terminated, truncated, elapsed == 0)
            for _, score, length in tracker.update(env_id, raw_reward_of(reward, info), elapsed):
                scores.append(score)
                lengths.append(length)
                episodes += 1

            # act
            epsilon = schedule(env_steps)
            actions = actor.act(observation_of(obs, info, spec.obs_kind), epsilon)
            env.send(actions, env_id)  # envpool steps in its threads while we learn
            last_action[env_id] = actions
            env_steps += k
            pbar.update(k)

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
                        copied[i].record()
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
        if n_metrics or last_steps != env_steps:
            log_row()
    finally:
        pbar.close()
        csv_file.close()
        env.close()

    # final checkpoint and evaluation
    checkpoint()
    train_time = time.perf_counter() - start
    log.info("trained %d agent steps (%d frames), %d updates, %d games in %.1f s (%.0f steps/s); last %d games: "
             "mean score %.2f", env_steps, env_steps * spec.frame_skip, learner.num_updates, episodes, train_time,
             env_steps / max(train_time, 1e-9), len(scores), _mean(scores))
    result = evaluate(cfg, online, device, seed=cfg.seed + 10_000)
    result.update(game=spec.task_id, run_name=name, env_steps=env_steps)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("evaluation: %d games, epsilon %.3f: mean score %.2f, median %.2f", len(result["scores"]),
             result["epsilon"], result["mean"], result["median"])
    if wandb_run is not None:
        wandb_run.log({"eval/mean_score": result["mean"], "eval/median_score": result["median"]}, step=env_steps)
        wandb_run.finish()
    return {
        "run_name": name, "env_steps": env_steps, "updates": learner.num_updates, "episodes": episodes,
        "train_time": train_time, "eval": result, "metrics": str(metrics_path), "checkpoint": str(ckpt_path),
    }


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

    Checks unknown config-group options (``network=foo``) and, against the typed
    schema, unknown keys and values of the wrong type (``optim.lr=abc``); every
    value of a sweep (``seed=0,1,2``) is checked. Values are checked by
    ``config.validate`` once the run starts.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra's own parser error says it best
        return
    schema = OmegaConf.structured(Config)
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete() or o.is_add() or o.package:
            continue
        try:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        except Exception:  # interval/range sweeps for sweepers: checked per trial
            continue
        if key in GROUPS:
            for option in values:
                if option is not None and not (CONF_DIR / key / f"{option}.yaml").exists():
                    options = sorted(p.stem for p in (CONF_DIR / key).glob("*.yaml"))
                    _fail(ConfigError(key, f"unknown option {option!r}; choose one of {', '.join(options)}"))
            continue
        for value in values:
            try:
                OmegaConf.update(OmegaConf.structured(schema), key, value, merge=True)
            except Exception as e:  # omegaconf ValidationError / ConfigKeyError
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if "not in" in first or "Key '" in first:
                    first = f"no such key in the config (see python -m dqnfast.train --cfg job)"
                _fail(ConfigError(key, first))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any] | None:
    """``python -m dqnfast.train [overrides]``: Hydra CLI (``--help``, ``--cfg job``, ``-m``)."""
    try:
        conf = to_config(cfg)
        check_config(conf)
        run_dir = HydraConfig.get().runtime.output_dir
        return train(conf, run_dir, config_dict=OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as e:
        _fail(e)
    return None


def cli() -> None:
    """Console entry point: pre-flight checks, then Hydra."""
    _preflight(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
