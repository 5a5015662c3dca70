"""The evaluation protocol: whole games on parallel envs, each counted once, and their statistics.

Games are spread over N synchronous envs in fixed quotas (env i plays
``episodes // N + (i < episodes % N)`` games, ``quotas``), so every game counts once and
short games cannot crowd out long ones. Scores are unclipped (``info["reward"]``) and
summed over lives; a game ends at its env's reset (``dqnfast.envs.GameTracker``); lengths
are agent steps. ``play`` runs one agent (a network, or None for the uniform-random one)
under a protocol and returns what it played; ``summarize`` gives the statistics eval.json
holds for each agent.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from dqnfast.agent.actor import Actor
from dqnfast.config import EnvsConfig, EvalProtocolConfig
from dqnfast.envs import ActionLog, GameTracker, observation_of, raw_reward_of

# The evaluation envs of a run seeded s are seeded s + EVAL_SEED_OFFSET + i: far from the training
# envs (s + i) so a final evaluation never replays the games the agent trained on.
EVAL_SEED_OFFSET = 10_000

__all__ = [
    "EVAL_SEED_OFFSET",
    "Game",
    "GameProgress",
    "Played",
    "num_eval_envs",
    "play",
    "quotas",
    "recorded_games",
    "run_episodes",
    "summarize",
]

log = logging.getLogger("dqnfast.evaluate")


def quotas(episodes: int, num_envs: int) -> list[int]:
    """Games per env: env i plays ``episodes // num_envs + (i < episodes % num_envs)``."""
    return [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]


def num_eval_envs(protocol: EvalProtocolConfig) -> int:
    """The envs a protocol plays on: ``num_envs``, but no more than there are games."""
    return max(1, min(int(protocol.num_envs), int(protocol.episodes)))


def run_episodes(
    env: Any, spec: Any, actor: Any, epsilon: float, episodes: int, progress: Callable[[int], None] | None = None
) -> tuple[list[float], list[int]]:
    """Plays ``episodes`` whole games on a fresh synchronous envpool ``env``; returns (scores, lengths).

    Env i plays its ``quotas`` share; the first games of each env count, in the order they
    end. spec: the env's EnvSpec. actor: ``act(obs, epsilon)`` -> int32 actions (a
    ``dqnfast.agent.actor.Actor``). progress: called with the number of games done each time one ends.
    """
    n = spec.num_envs
    quota = np.array(quotas(episodes, n))
    done = np.zeros(n, np.int64)
    tracker = GameTracker(n)
    scores: list[float] = []
    lengths: list[int] = []
    env.async_reset()
    while (done < quota).any():
        obs, reward, _, _, info = env.recv()
        env_id = info["env_id"]
        for e, score, length in tracker.update(env_id, raw_reward_of(reward, info), info["elapsed_step"]):
            if done[e] < quota[e]:
                scores.append(score)
                lengths.append(length)
                done[e] += 1
                if progress is not None:
                    progress(len(scores))
        env.send(actor.act(observation_of(obs, info, spec.obs_kind), epsilon), env_id)
    env.recv()  # collect the last in-flight step before the caller closes the env
    return scores, lengths


@dataclass
class Game:
    """One finished game of a recorded evaluation: env ``env``'s ``index``-th game, results start..stop-1."""

    env: int
    index: int
    start: int
    stop: int
    score: float
    length: int


def recorded_games(recording: Any, quota: Sequence[int]) -> list[Game]:
    """The first ``quota[e]`` finished games of each env e of an ``ActionLog(results=True)`` (the counted ones)."""
    rewards, elapsed = recording.rewards, recording.elapsed
    out: list[Game] = []
    for e in range(rewards.shape[1]):
        starts = np.flatnonzero(elapsed[:, e] == 0).tolist()
        for j, (s, t) in enumerate(zip(starts, starts[1:])):
            if j >= quota[e]:
                break
            score = float(rewards[s + 1 : t, e].astype(np.float64).sum())
            out.append(Game(env=e, index=j, start=s, stop=t, score=score, length=int(elapsed[t - 1, e])))
    return out


@dataclass
class Played:
    """What one agent's evaluation produced. scores / lengths (agent steps) in the order games ended.

    recording: the ``ActionLog`` of every action and result (``play(record=True)``), and
    ``games`` the counted games in it; env_config: the evaluation env's ``env.config``.
    """

    scores: list[float]
    lengths: list[int]
    epsilon: float
    task_id: str = ""
    seed: int = 0
    recording: Any = None
    games: list[Game] = field(default_factory=list)
    env_config: dict = field(default_factory=dict)


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
    task: tuple[str, str] | None = None,
) -> Played:
    """Plays ``protocol.episodes`` whole games with ``network`` (None: uniform random) at ``epsilon``.

    network: obs -> one score per action, played greedily (argmax), ε-greedy at
    ``epsilon``: a DQN's Q-network or a REINFORCE policy (its logits). Uses
    ``num_eval_envs(protocol)`` synchronous envs seeded ``seed`` (env i: seed + i).
    record: keep every action and result (``Played.recording``) to re-play games (videos).
    task: ``game`` already resolved, ``(task_id, family)`` (``dqnfast.envs.resolve_game``).
    """
    from dqnfast.envs import make_env  # looked up at each call: tests replace it on its module

    n = num_eval_envs(protocol)
    env, spec = make_env(game, obs, envs, protocol, seed=seed, num_envs=n, batch_size=n, task=task)
    rec = ActionLog(n, env=env, results=True) if record else None
    agent = "trained agent" if network is not None else "random agent"
    if network is None:
        network, epsilon = torch.nn.Identity(), 1.0  # eps >= 1: the actor never calls the network
    actor = Actor(network, spec.num_actions, device, seed=seed)
    was_training = getattr(network, "training", False)
    network.eval()
    try:
        progress = GameProgress(agent, protocol.episodes)
        scores, lengths = run_episodes(rec or env, spec, actor, epsilon, int(protocol.episodes), progress=progress)
    finally:
        network.train(was_training)
        config = dict(env.config)
        env.close()
    out = Played(
        [float(s) for s in scores],
        [int(k) for k in lengths],
        float(epsilon),
        spec.task_id,
        int(seed),
        rec,
        env_config=config,
    )
    if rec is not None:
        out.games = recorded_games(rec, quotas(int(protocol.episodes), n))
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
