"""Evaluate a trained agent: ``python -m dqnfast.evaluate run=<run dir or checkpoint>``.

The standard Atari protocol by default (Machado et al. 2018 naming): whole games (no
episodic life), unclipped scores, up to 30 no-op starts, games capped at 108k frames
(27,000 agent steps), the run's ``explore.eval_epsilon`` (0.05 by default, as the Nature
paper; the same ε as the run's own final evaluation), sticky actions off
(``repeat_action_probability=0.25`` turns them on), 100 games. The same protocol is
played by a uniform-random agent on the same game and seeds, so every report reads
"trained vs random". Games run on parallel envs with a fixed quota per env
(``dqnfast.actor.run_episodes``): every game counts once and short games do not crowd
out long ones.

Writes (``<run dir>/eval/`` unless ``out=``): ``eval.json`` (see ``evaluate_network``
and ``evaluate``), ``eval_scores.png`` (histogram, trained vs random),
``learning_curve.png`` (from the run's metrics.csv), with ``video=true`` an MP4 (and
``gif=true`` a GIF) of one game at 210x160 RGB (``dqnfast.video``), and prints a table.

Library use (no Hydra)::

    from dqnfast.evaluate import EvalConfig, evaluate
    result = evaluate(EvalConfig(run="outputs/2024-01-01/12-00-00", episodes=30))
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from dqnfast.config import ConfigError, EnvsConfig, EvalProtocolConfig, ExploreConfig
from dqnfast.config.resolve import available_cores, resolve_device, thread_counts

__all__ = [
    "EvalConfig",
    "Evaluation",
    "Game",
    "Played",
    "RecordingEnv",
    "default_out",
    "evaluate",
    "evaluate_network",
    "final_evaluation",
    "format_table",
    "play",
    "summarize",
    "validate_eval",
    "write_json",
    "write_plots",
    "write_videos",
]

log = logging.getLogger("dqnfast.evaluate")

VIDEO_CHOICES = ("first", "best", "median", "worst")
REFERENCE_SOURCE = (
    "Mnih et al. 2015 (Nature), Extended Data Table 2; Badia et al. 2020 (Agent57), Table H.4 -- dqnfast.atari_scores"
)


# --------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """``python -m dqnfast.evaluate`` (conf/evaluate.yaml holds the same defaults).

    run: a run dir (its ``checkpoint.pt``) or a checkpoint file. episodes: games per
    agent. num_envs: envs playing them in parallel (at most ``episodes``). epsilon:
    the trained agent's epsilon-greedy (null: the run's ``explore.eval_epsilon``, so this
    and the run's final evaluation are comparable). noop_max: up to this many no-op agent
    steps at each reset. repeat_action_probability: sticky actions (0.25 in Machado et al.
    2018). max_episode_steps: agent steps per game (27000 = 108k frames). random_baseline:
    also play a uniform-random agent with the same protocol and seeds. seed: env seed (null:
    the run's seed + 10000, as train's final evaluation); env i of the batch gets seed + i.
    device: auto | cpu | cuda | cuda:N. out: output dir (null: ``<run dir>/eval``, or
    ``<run dir>/eval-<name>`` for a checkpoint other than the newest). plots: write
    eval_scores.png and learning_curve.png. video: write an MP4 of one trained game at
    210x160 RGB (Atari only). gif: write that game as a looping GIF too. video_episode:
    which game: first | best | median | worst score. video_fps: frames per second of the
    video (null: real time, 60 / frame_skip). game: the game (null: the checkpoint's; set,
    it must match the checkpoint's). num_threads: envpool threads (null: all cores). torch_threads: torch CPU threads
    (null: half the cores on CPU, else torch's default).
    """

    run: str = "???"
    episodes: int = 100
    num_envs: int = 10
    epsilon: Optional[float] = None
    noop_max: int = 30
    repeat_action_probability: float = 0.0
    max_episode_steps: int = 27000
    random_baseline: bool = True
    seed: Optional[int] = None
    device: str = "auto"
    out: Optional[str] = None
    plots: bool = True
    video: bool = False
    gif: bool = False
    video_episode: str = "best"
    video_fps: Optional[float] = None
    game: Optional[str] = None
    num_threads: Optional[int] = None
    torch_threads: Optional[int] = None


def validate_eval(cfg: EvalConfig) -> None:
    """Value checks; raises ConfigError naming the key."""

    def check(ok: bool, key: str, msg: str) -> None:
        if not ok:
            raise ConfigError(key, msg)

    check(
        cfg.run not in (None, "", "???"),
        "run",
        "give the run dir or checkpoint to evaluate: python -m dqnfast.evaluate run=outputs/DATE/TIME",
    )
    check(isinstance(cfg.episodes, int) and cfg.episodes >= 1, "episodes", f"must be >= 1, got {cfg.episodes!r}")
    check(isinstance(cfg.num_envs, int) and cfg.num_envs >= 1, "num_envs", f"must be >= 1, got {cfg.num_envs!r}")
    check(cfg.epsilon is None or 0.0 <= cfg.epsilon <= 1.0, "epsilon", f"must be in [0, 1], got {cfg.epsilon!r}")
    check(cfg.noop_max >= 0, "noop_max", f"must be >= 0, got {cfg.noop_max!r}")
    check(
        0.0 <= cfg.repeat_action_probability <= 1.0,
        "repeat_action_probability",
        f"must be in [0, 1], got {cfg.repeat_action_probability!r}",
    )
    check(cfg.max_episode_steps >= 1, "max_episode_steps", f"must be >= 1, got {cfg.max_episode_steps!r}")
    check(cfg.seed is None or cfg.seed >= 0, "seed", f"must be >= 0 or null, got {cfg.seed!r}")
    check(
        str(cfg.video_episode) in VIDEO_CHOICES,
        "video_episode",
        f"unknown choice {cfg.video_episode!r}; choose one of {', '.join(VIDEO_CHOICES)}",
    )
    check(cfg.video_fps is None or cfg.video_fps > 0, "video_fps", f"must be > 0 or null, got {cfg.video_fps!r}")


# -------------------------------------------------------------------- playing
class RecordingEnv:
    """An envpool env that remembers, per env, every result and every action sent.

    ``actions[e][k]`` is the action sent to env e after its result k;
    ``rewards[e][k]`` (unclipped) and ``elapsed[e][k]`` (``info["elapsed_step"]``)
    describe result k. Result 0 is the reset. With the env's seed this is enough to
    re-play any game exactly (``dqnfast.video``). Costs a few bytes per agent step.
    """

    def __init__(self, env: Any, num_envs: int) -> None:
        self.env = env
        self.actions: list[list[int]] = [[] for _ in range(num_envs)]
        self.rewards: list[list[float]] = [[] for _ in range(num_envs)]
        self.elapsed: list[list[int]] = [[] for _ in range(num_envs)]

    @property
    def config(self) -> dict:
        return self.env.config

    def async_reset(self) -> None:
        self.env.async_reset()

    def recv(self):
        from dqnfast.envs import raw_reward_of

        out = self.env.recv()
        _, reward, _, _, info = out
        raw = raw_reward_of(reward, info)
        for e, r, n in zip(
            info["env_id"].tolist(), np.asarray(raw, np.float64).tolist(), info["elapsed_step"].tolist()
        ):
            self.rewards[e].append(r)
            self.elapsed[e].append(n)
        return out

    def send(self, actions: np.ndarray, env_id: np.ndarray) -> None:
        for e, a in zip(np.asarray(env_id).tolist(), np.asarray(actions).tolist()):
            self.actions[e].append(a)
        self.env.send(actions, env_id)

    def close(self) -> None:
        self.env.close()

    def games(self, quota: Sequence[int]) -> list[Game]:
        """The first ``quota[e]`` finished games of each env e (the ones run_episodes counted)."""
        out: list[Game] = []
        for e, (rew, ela) in enumerate(zip(self.rewards, self.elapsed)):
            starts = [k for k, n in enumerate(ela) if n == 0]
            for j, (s, t) in enumerate(zip(starts, starts[1:])):
                if j >= quota[e]:
                    break
                out.append(
                    Game(env=e, index=j, start=s, stop=t, score=float(sum(rew[s + 1 : t])), length=int(ela[t - 1]))
                )
        return out


@dataclass
class Game:
    """One finished game of a recorded evaluation: env ``env``'s ``index``-th game, results start..stop-1."""

    env: int
    index: int
    start: int
    stop: int
    score: float
    length: int


@dataclass
class Played:
    """What one agent's evaluation produced. scores / lengths (agent steps) in the order games ended."""

    scores: list[float]
    lengths: list[int]
    epsilon: float
    task_id: str = ""
    seed: int = 0
    recorder: RecordingEnv | None = None
    games: list[Game] = field(default_factory=list)
    env_config: dict = field(default_factory=dict)


def _quota(episodes: int, n: int) -> list[int]:
    return [episodes // n + (i < episodes % n) for i in range(n)]


class GameProgress:
    """Logs ``<agent>: <done>/<asked> games`` as games finish: at most every 10% or 30 s, and the last one.

    A log line (not a bar) so the progress reaches evaluate.log and non-terminal output too.
    """

    def __init__(self, agent: str, asked: int, *, every_s: float = 30.0) -> None:
        self.agent, self.asked, self.every_s = agent, int(asked), every_s
        self.step = max(1, self.asked // 10)
        self.next = self.step
        self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done >= self.asked or done >= self.next or now - self.last >= self.every_s:
            log.info("%s: %d/%d games", self.agent, done, self.asked)
            self.next = (done // self.step + 1) * self.step
            self.last = now


def play(
    game: str,
    obs: str,
    envs: EnvsConfig,
    protocol: EvalProtocolConfig,
    network: Any,
    *,
    epsilon: float,
    seed: int,
    device: Any = "cpu",
    record: bool = False,
) -> Played:
    """Plays ``protocol.episodes`` whole games with ``network`` (None: uniform random) at ``epsilon``.

    Uses ``min(protocol.num_envs, protocol.episodes)`` synchronous envs seeded
    ``seed`` (env i: seed + i) and ``dqnfast.actor.run_episodes`` (fixed per-env
    quotas). record: keep every action and result for re-playing games (videos).
    """
    from dqnfast.actor import Actor, run_episodes
    from dqnfast.envs import make_env

    n = max(1, min(int(protocol.num_envs), int(protocol.episodes)))
    env, spec = make_env(game, obs, envs, protocol, seed=seed, num_envs=n, batch_size=n)
    rec = RecordingEnv(env, n) if record else None
    agent = "trained agent" if network is not None else "random agent"
    if network is None:
        import torch

        network, epsilon = torch.nn.Identity(), 1.0  # eps >= 1: the actor never calls the network
    actor = Actor(network, spec.num_actions, device, seed=seed)
    was_training = getattr(network, "training", False)
    network.eval()
    try:
        scores, lengths = run_episodes(
            rec or env, spec, actor, epsilon, int(protocol.episodes), progress=GameProgress(agent, protocol.episodes)
        )
    finally:
        network.train(was_training)
        config = dict(env.config)
        env.close()
    out = Played(
        [float(s) for s in scores],
        [int(n_) for n_ in lengths],
        float(epsilon),
        spec.task_id,
        int(seed),
        rec,
        env_config=config,
    )
    if rec is not None:
        out.games = rec.games(_quota(int(protocol.episodes), n))
        if sorted(g.score for g in out.games) != sorted(out.scores):  # the recording must tell the same story
            raise RuntimeError("evaluate: the recorded games do not match the counted ones")
    return out


def summarize(scores: Sequence[float], lengths: Sequence[int] = ()) -> dict[str, Any]:
    """mean, std (population), median, min, max, episodes, scores, lengths (NaN -> None in JSON)."""
    xs = [float(s) for s in scores]
    nan = math.nan
    return {
        "episodes": len(xs),
        "mean": statistics.fmean(xs) if xs else nan,
        "std": statistics.pstdev(xs) if len(xs) > 1 else (0.0 if xs else nan),
        "median": float(statistics.median(xs)) if xs else nan,
        "min": min(xs) if xs else nan,
        "max": max(xs) if xs else nan,
        "scores": xs,
        "lengths": [int(n) for n in lengths],
    }


def _short(task_id: str) -> str:
    return task_id.split("-v")[0]


@dataclass
class Evaluation:
    """``result``: the eval.json dict; ``trained`` / ``random``: what each agent played."""

    result: dict[str, Any]
    trained: Played
    random: Played | None


def evaluate_network(
    network: Any,
    *,
    game: str,
    obs: str,
    envs: EnvsConfig,
    protocol: EvalProtocolConfig,
    epsilon: float,
    seed: int,
    device: Any = "cpu",
    random_baseline: bool = True,
    record: bool = False,
) -> Evaluation:
    """Evaluates ``network`` and (optionally) a uniform-random agent with the same protocol and env seeds.

    Returns an Evaluation whose ``result`` holds, for the trained agent at the top
    level: episodes, mean, std, median, min, max, scores, lengths (agent steps),
    epsilon, human_normalized (of the mean; null where ``dqnfast.atari_scores`` has no
    reference); ``random``: the same for the random agent (or null); ``game``;
    ``protocol``; ``reference`` (random and human scores and their source, or null).
    """
    from dqnfast.atari_scores import REFERENCE_SCORES, human_normalized

    trained = play(game, obs, envs, protocol, network, epsilon=epsilon, seed=seed, device=device, record=record)
    rand = play(game, obs, envs, protocol, None, epsilon=1.0, seed=seed) if random_baseline else None
    short = _short(trained.task_id)
    atari = bool(trained.env_config.get("img_height"))

    def hns(x: float) -> float | None:
        v = human_normalized(short, x) if math.isfinite(x) else math.nan
        return v if math.isfinite(v) else None

    result: dict[str, Any] = {"game": trained.task_id}
    result.update(summarize(trained.scores, trained.lengths))
    result["epsilon"] = trained.epsilon
    result["human_normalized"] = hns(result["mean"])
    if rand is not None:
        r = summarize(rand.scores, rand.lengths)
        r["epsilon"] = 1.0
        r["human_normalized"] = hns(r["mean"])
        result["random"] = r
    else:
        result["random"] = None
    ref = REFERENCE_SCORES.get(short)
    result["reference"] = {"random": ref[0], "human": ref[1], "source": REFERENCE_SOURCE} if ref else None
    n = max(1, min(int(protocol.num_envs), int(protocol.episodes)))
    result["protocol"] = {
        "episodes": int(protocol.episodes),
        "num_envs": n,
        "epsilon": float(epsilon),
        "seed": int(seed),
        "episodic_life": bool(protocol.episodic_life) if atari else None,
        "reward_clip": bool(protocol.reward_clip) if atari else None,
        "noop_max": int(protocol.noop_max) if atari else None,
        "repeat_action_probability": float(protocol.repeat_action_probability) if atari else None,
        "max_episode_steps": int(trained.env_config.get("max_episode_steps", protocol.max_episode_steps)),
        "frame_skip": int(trained.env_config.get("frame_skip", 1)),
        "max_episode_frames": int(trained.env_config.get("max_episode_steps", protocol.max_episode_steps))
        * int(trained.env_config.get("frame_skip", 1)),
    }
    return Evaluation(result, trained, rand)


def final_evaluation(
    cfg: Any,
    network: Any,
    device: Any,
    run_dir: Path,
    *,
    task_id: str,
    run_name: str,
    env_steps: int,
    frame_skip: int,
    updates: int,
    checkpoint: Path,
) -> dict[str, Any]:
    """A training run's final evaluation: ``envs.eval`` games at ``explore.eval_epsilon``, trained vs random.

    cfg: the run's Config. Seeds the envs with ``seed + 10000`` (as ``python -m
    dqnfast.evaluate`` does by default), writes ``eval.json`` and the two plots into
    ``run_dir``; returns eval.json's dict (``evaluate_network``'s, plus game, run_name,
    env_steps, frames, updates, checkpoint). A failed plot is logged, never raised.
    """
    ev = cfg.envs.eval
    if ev.episodes <= 0:
        result: dict[str, Any] = {**summarize([]), "epsilon": cfg.explore.eval_epsilon, "random": None}
    else:
        result = evaluate_network(
            network,
            game=cfg.game,
            obs=cfg.obs,
            envs=cfg.envs,
            protocol=ev,
            epsilon=cfg.explore.eval_epsilon,
            seed=cfg.seed + 10_000,
            device=device,
        ).result
    result.update(
        game=task_id,
        run_name=run_name,
        env_steps=env_steps,
        frames=env_steps * frame_skip,
        updates=updates,
        checkpoint=str(checkpoint),
    )
    write_json(result, run_dir / "eval.json")
    try:
        write_plots(result, run_dir, run_dir / "metrics.csv", frame_skip=frame_skip)
    except Exception as e:  # a plot must never lose a finished run
        logging.getLogger("dqnfast.train").warning("plots: %s", " ".join(str(e).split()))
    return result


# ---------------------------------------------------------------------- report
def _fmt(x: Any, width: int = 9) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return f"{'-':>{width}}"
    if isinstance(x, float):
        return f"{x:>{width}.3f}" if abs(x) < 10 else f"{x:>{width}.1f}"
    return f"{x:>{width}}"


def format_table(result: dict[str, Any]) -> str:
    """The printed report: a header (game, checkpoint, protocol) and a markdown table."""
    p = result.get("protocol") or {}
    lines = [f"{result.get('game')}: {result.get('checkpoint', '')}".rstrip(": ")]
    if result.get("env_steps") is not None:
        lines.append(
            f"trained {result['env_steps']:,} agent steps ({result.get('frames', 0):,} frames), "
            f"{result.get('updates', 0):,} updates"
        )
    prot = [
        f"{p.get('episodes')} games on {p.get('num_envs')} envs",
        f"eps {p.get('epsilon')}",
        f"seed {p.get('seed')}",
    ]
    if p.get("noop_max") is not None:
        prot += [
            f"up to {p['noop_max']} no-ops",
            f"sticky actions {p['repeat_action_probability']}",
            f"cap {p['max_episode_steps']} steps ({p['max_episode_frames']} frames)",
            "episodic life" if p.get("episodic_life") else "whole games",
            "clipped rewards" if p.get("reward_clip") else "unclipped scores",
        ]
    lines.append("protocol: " + ", ".join(prot))
    lines.append("")
    cols = ("agent", "games", "mean", "std", "median", "min", "max", "human-norm.")
    widths = (7, 5, 9, 9, 9, 9, 9, 11)
    lines.append("| " + " | ".join(f"{c:>{w}}" for c, w in zip(cols, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    rows = [("trained", result)] + ([("random", result["random"])] if result.get("random") else [])
    for name, r in rows:
        vals = [f"{name:>7}", _fmt(r.get("episodes"), 5)] + [
            _fmt(r.get(k)) for k in ("mean", "std", "median", "min", "max")
        ]
        vals.append(_fmt(r.get("human_normalized"), 11))
        lines.append("| " + " | ".join(vals) + " |")
    ref = result.get("reference")
    if ref:
        lines.append(
            f"human-normalized = (score - {ref['random']}) / ({ref['human']} - {ref['random']}): "
            "0 = random, 1 = human (Mnih et al. 2015)"
        )
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """eval.json, atomically, NaN written as null."""
    from dqnfast.atomic import atomic_open

    path = Path(path)
    with atomic_open(path, "w") as f:
        f.write(json.dumps(_json_safe(result), indent=2) + "\n")
    return path


def write_plots(result: dict[str, Any], out: Path, metrics_csv: Path | None, *, frame_skip: int = 1) -> dict:
    """eval_scores.png (trained vs random) and, if metrics_csv exists, learning_curve.png; returns their paths."""
    from dqnfast.plots import plot_eval_scores, plot_learning_curve

    paths: dict[str, str] = {}
    steps = f" after {result['env_steps']:,} agent steps" if result.get("env_steps") is not None else ""
    eps = (result.get("protocol") or {}).get("epsilon", result.get("epsilon"))
    title = f"{result.get('game')}{steps}: trained (eps {eps}) vs random"
    rand = result.get("random") or {}
    paths["eval_scores"] = str(
        plot_eval_scores(result.get("scores", []), rand.get("scores"), out / "eval_scores.png", title=title)
    )
    if metrics_csv is not None and metrics_csv.is_file():
        paths["learning_curve"] = str(
            plot_learning_curve(
                metrics_csv,
                out / "learning_curve.png",
                title=f"{result.get('game')}: learning curve",
                frame_skip=frame_skip,
                eval_mean=result.get("mean"),
                random_mean=rand.get("mean"),
            )
        )
    return paths


def _pick_game(games: list[Game], which: str) -> Game:
    if which == "first":
        return min(games, key=lambda g: (g.index, g.env))
    if which in ("best", "worst"):
        sign = -1.0 if which == "best" else 1.0
        return min(games, key=lambda g: (sign * g.score, g.stop, g.env))  # ties: the least to re-play
    ranked = sorted(games, key=lambda g: (g.score, g.stop, g.env))
    return ranked[(len(ranked) - 1) // 2]


def write_videos(
    played: Played, out: Path, *, which: str = "best", mp4: bool = True, gif: bool = False, fps: float | None = None
) -> dict[str, Any]:
    """Re-plays one recorded game in colour (``dqnfast.video``) and streams it to MP4 / GIF; returns paths and facts.

    The file names carry the game's score: ``video_<game>_<which>_score<score>.mp4``.
    """
    from dqnfast.video import iter_replay, write_frames

    if played.recorder is None or not played.games:
        raise ValueError("write_videos needs a recorded evaluation (play(..., record=True)) with finished games")
    g = _pick_game(played.games, which)
    rec = played.recorder
    frames = iter_replay(
        played.task_id,
        played.env_config,
        g.env,
        rec.actions[g.env],
        rec.rewards[g.env],
        rec.elapsed[g.env],
        g.start,
        g.stop,
    )
    fps = float(fps or 60.0 / max(1, int(played.env_config.get("frame_skip", 4))))
    stem = f"video_{_short(played.task_id)}_{which}_score{g.score:g}"
    paths = {"mp4": out / f"{stem}.mp4" if mp4 else None, "gif": out / f"{stem}.gif" if gif else None}
    shape: list[int] = []

    def seen(frames):
        for f in frames:
            shape[:] = list(f.shape)
            yield f

    n = write_frames(seen(frames), mp4=paths["mp4"], gif=paths["gif"], fps=fps)
    info: dict[str, Any] = {
        "episode": which,
        "env": g.env,
        "game_of_env": g.index,
        "score": g.score,
        "length": g.length,
        "frames": n,
        "fps": fps,
        "shape": shape,
    }
    info.update({k: str(p) for k, p in paths.items() if p is not None})
    return info


# ----------------------------------------------------------------- evaluate app
def default_out(checkpoint: Path) -> Path:
    """``<run dir>/eval`` for a run's newest checkpoint, ``<run dir>/eval-<stem>`` for another one."""
    from dqnfast.checkpoint import CHECKPOINT_NAME, run_dir_of

    run = run_dir_of(checkpoint)
    return run / "eval" if checkpoint.name == CHECKPOINT_NAME else run / f"eval-{checkpoint.stem}"


def _obs_kind(ckpt: dict) -> str:
    if isinstance(ckpt.get("obs"), dict) and ckpt["obs"].get("kind"):
        return str(ckpt["obs"]["kind"])
    cfg_obs = (ckpt.get("config") or {}).get("obs", "pixels")
    net = ckpt.get("network") or {}
    if net.get("kind") == "nature":
        return "pixels"
    return "ram" if cfg_obs == "ram" and list(net.get("obs_shape", [])) == [128] else "vector"


def _log_to_files(text: str) -> None:
    """Writes ``text`` as one INFO record to the root logger's log files only (Hydra's ``<job>.log``)."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def evaluate(cfg: EvalConfig, out: str | os.PathLike | None = None, *, echo: bool = True) -> dict[str, Any]:
    """The ``dqnfast.evaluate`` app without Hydra: loads, checks, plays, writes, prints; returns eval.json's dict.

    Raises ConfigError (key ``run`` for an unusable or mismatched checkpoint, the
    key's name for a bad value) and ``dqnfast.video.VideoError``. The app's steps in the
    order they run (check, load, play, write, print); splitting it would pass a dozen locals.
    """
    import torch

    from dqnfast.checkpoint import CheckpointError, check_compatible, find_checkpoint, load_checkpoint, run_dir_of
    from dqnfast.envs import make_env, resolve_game
    from dqnfast.networks import make_network

    validate_eval(cfg)
    if cfg.video or cfg.gif:
        from dqnfast.video import VideoError, check_video_deps

        try:
            check_video_deps(gif=cfg.gif)
        except VideoError as e:
            raise ConfigError("video", str(e)) from None
    try:
        path = find_checkpoint(cfg.run)
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError("run", str(e)) from None
    if ckpt.get("learner") == "reinforce":  # a policy network, not a Q-network this app can rebuild
        raise ConfigError(
            "run",
            f"{path} is a REINFORCE checkpoint; its final evaluation is the run's eval.json (see docs/reinforce.md)",
        )
    run_dir = run_dir_of(path)
    out = Path(out or cfg.out or default_out(path))
    train_cfg = ckpt.get("config") or {}
    envs_cfg = train_cfg.get("envs") or {}
    obs = _obs_kind(ckpt)
    game = cfg.game or ckpt.get("game")
    try:
        task_id, family = resolve_game(game)
    except ValueError as e:
        raise ConfigError("game", str(e)) from None
    if (cfg.video or cfg.gif) and family != "atari":
        raise ConfigError("video", f"videos are for Atari games; {task_id} has no screen")
    envs = EnvsConfig(
        num_envs=cfg.num_envs,
        num_threads=cfg.num_threads,
        frame_skip=int(envs_cfg.get("frame_skip", 4)),
        stack=int(envs_cfg.get("stack", 4)),
    )
    protocol = EvalProtocolConfig(
        episodic_life=False,
        reward_clip=False,
        noop_max=cfg.noop_max,
        repeat_action_probability=cfg.repeat_action_probability,
        max_episode_steps=cfg.max_episode_steps,
        episodes=cfg.episodes,
        num_envs=cfg.num_envs,
    )
    probe, spec = make_env(task_id, "pixels" if obs == "vector" else obs, envs, protocol, seed=0, num_envs=1)
    probe.close()
    try:
        check_compatible(
            ckpt,
            game=task_id,
            obs_kind=spec.obs_kind,
            num_actions=spec.num_actions,
            network={**ckpt["network"], "obs_shape": list(spec.obs_shape), "num_actions": spec.num_actions},
            what="this evaluation",
        )
        net = make_network(ckpt["network"])
        net.load_state_dict(ckpt["online"])
    except (CheckpointError, RuntimeError, KeyError, TypeError, ValueError) as e:
        raise ConfigError("run", " ".join(str(e).split()) or type(e).__name__) from None
    device = resolve_device(cfg.device)
    _, _, threads = thread_counts(available_cores(), cpu=device.type == "cpu", torch_threads=cfg.torch_threads)
    if threads:  # as in training: spinning torch workers beside envpool's cost up to 10x
        torch.set_num_threads(threads)
    net.to(device)
    counters = ckpt.get("counters") or {}
    seed = int(cfg.seed if cfg.seed is not None else int(counters.get("seed", train_cfg.get("seed", 0))) + 10_000)
    # One default for both evaluations of a run: the ε its final evaluation used.
    eps = cfg.epsilon
    if eps is None:
        eps = float((train_cfg.get("explore") or {}).get("eval_epsilon", ExploreConfig.eval_epsilon))

    start = time.perf_counter()
    log.info(
        "evaluating %s (%s, %d agent steps) on %s: %d games, eps %g, seed %d",
        path,
        task_id,
        int(counters.get("env_steps", 0)),
        device,
        cfg.episodes,
        eps,
        seed,
    )
    ev = evaluate_network(
        net,
        game=task_id,
        obs=spec.obs_kind,
        envs=envs,
        protocol=protocol,
        epsilon=eps,
        seed=seed,
        device=device,
        random_baseline=cfg.random_baseline,
        record=cfg.video or cfg.gif,
    )
    from dqnfast.checkpoint import package_version

    result = ev.result
    fs = int(envs.frame_skip) if family == "atari" else 1
    head = {
        "game": task_id,
        "checkpoint": str(path.resolve()),
        "run_dir": str(run_dir),
        "env_steps": int(counters.get("env_steps", 0)),
        "frames": int(counters.get("frames", int(counters.get("env_steps", 0)) * fs)),
        "updates": int(counters.get("updates", 0)),
    }
    result = {**head, **{k: v for k, v in result.items() if k not in head}}
    result["time"] = time.perf_counter() - start
    result["dqnfast"] = package_version()
    out.mkdir(parents=True, exist_ok=True)
    result["plots"] = write_plots(result, out, run_dir / "metrics.csv", frame_skip=fs) if cfg.plots else {}
    result["video"] = None
    write_json(result, out / "eval.json")  # the scores are safe before the video is tried
    if cfg.video or cfg.gif:
        kinds = " and ".join(k for k, on in (("MP4", cfg.video), ("GIF", cfg.gif)) if on)
        log.info("writing the %s of the %s trained game (re-played in colour) to %s", kinds, cfg.video_episode, out)
        result["video"] = write_videos(
            ev.trained, out, which=str(cfg.video_episode), mp4=cfg.video, gif=cfg.gif, fps=cfg.video_fps
        )
        write_json(result, out / "eval.json")
    _log_to_files(format_table(result))  # the results table in evaluate.log; stdout gets it below
    if echo:
        print(format_table(result))
        print(
            f"wrote {out / 'eval.json'}"
            + "".join(f", {Path(p).name}" for p in result["plots"].values())
            + "".join(
                f", {Path(result['video'][k]).name}" for k in ("mp4", "gif") if result["video"] and k in result["video"]
            )
        )
    return result


if __name__ == "__main__":
    from dqnfast.cli.evaluate import cli

    cli()
