"""eval.json: the one builder and writer of the evaluation results, and the printed table.

Both evaluations write the same layout: a training run's final evaluation
(``final_evaluation``, into the run dir) and ``python -m dqnfast.evaluate`` (into
``<run dir>/eval/``). What was evaluated comes first (game, checkpoint, run_dir, run_name,
env_steps, frames, updates), then the trained agent's statistics at the top level
(``evaluate_network``), the random agent's under ``random``, the game's ``reference``
scores, the ``protocol``, then the app's ``time`` and ``dqnfast`` version, and ``plots`` and
``video`` (paths and facts, or null). eval.json is written before the plots and again
after them, so the scores are on disk before anything else is tried.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dqnfast.atari_scores import REFERENCE_SCORES, human_normalized
from dqnfast.atomic import atomic_open
from dqnfast.config import EnvsConfig, EvalProtocolConfig
from dqnfast.config.schema import LearnerName
from dqnfast.evaluation.plots import plot_eval_scores, plot_learning_curve
from dqnfast.evaluation.protocol import EVAL_SEED_OFFSET, Played, num_eval_envs, play, summarize

__all__ = [
    "POLICIES",
    "REFERENCE_SOURCE",
    "Evaluation",
    "eval_json",
    "evaluate_network",
    "final_evaluation",
    "format_table",
    "write_json",
    "write_outputs",
    "write_plots",
]

log = logging.getLogger("dqnfast.evaluate")

REFERENCE_SOURCE = (
    "Mnih et al. 2015 (Nature), Extended Data Table 2; Badia et al. 2020 (Agent57), Table H.4 -- dqnfast.atari_scores"
)
# eval.json's protocol.policy: how the trained agent picks its actions, per learner
POLICIES = {
    LearnerName.dqn: "argmax of the Q-values; a uniform-random action with probability epsilon",
    LearnerName.reinforce: (
        "greedy: argmax of the policy's logits (not sampled); a uniform-random action with probability epsilon"
    ),
}


def short_name(task_id: str) -> str:
    """``Pong-v5`` -> ``Pong``."""
    return task_id.split("-v")[0]


@dataclass
class Evaluation:
    """``result``: the statistics of eval.json (``evaluate_network``); ``trained`` / ``random``: what each agent played."""

    result: dict[str, Any]
    trained: Played
    random: Played | None


def _agent(played: Played, short: str) -> dict[str, Any]:
    """One agent's statistics, its epsilon and its mean's human-normalized score (null without a reference)."""
    out = summarize(played.scores, played.lengths)
    out["epsilon"] = played.epsilon
    hns = human_normalized(short, out["mean"]) if math.isfinite(out["mean"]) else math.nan
    out["human_normalized"] = hns if math.isfinite(hns) else None
    return out


def _protocol(protocol: EvalProtocolConfig, played: Played, *, epsilon: float, learner: str) -> dict[str, Any]:
    """eval.json's ``protocol``: the games, envs, seed, the trained agent's policy and the env settings."""
    atari = bool(played.env_config.get("img_height"))
    steps = int(played.env_config.get("max_episode_steps", protocol.max_episode_steps))
    skip = int(played.env_config.get("frame_skip", 1))
    return {
        "episodes": int(protocol.episodes),
        "num_envs": num_eval_envs(protocol),
        "epsilon": float(epsilon),
        "seed": int(played.seed),
        "policy": POLICIES[learner],
        "episodic_life": bool(protocol.episodic_life) if atari else None,
        "reward_clip": bool(protocol.reward_clip) if atari else None,
        "noop_max": int(protocol.noop_max) if atari else None,
        "repeat_action_probability": float(protocol.repeat_action_probability) if atari else None,
        "max_episode_steps": steps,
        "frame_skip": skip,
        "max_episode_frames": steps * skip,
    }


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
    learner: LearnerName | str = LearnerName.dqn,
    task: tuple[str, str] | None = None,
) -> Evaluation:
    """Evaluates ``network`` and (optionally) a uniform-random agent with the same protocol and env seeds.

    network: a DQN Q-network or, ``learner="reinforce"``, a policy network; either is played
    by its argmax (``POLICIES``). Returns an Evaluation whose ``result`` holds, for the
    trained agent at the top level: game, episodes, mean, std, median, min, max, scores,
    lengths (agent steps), epsilon, human_normalized (of the mean; null where
    ``dqnfast.atari_scores`` has no reference); ``random``: the same for the random agent
    (or null); ``reference`` (random and human scores and their source, or null); ``protocol``.
    task: ``game`` already resolved, ``(task_id, family)``; None: resolved here, once for both agents.
    """
    from dqnfast.envs import resolve_game  # looked up at each call: tests replace it on its module

    if learner not in POLICIES:
        raise ValueError(f"learner must be one of {', '.join(POLICIES)}, got {learner!r}")
    task = task or resolve_game(game, envs)
    trained = play(
        game, obs, envs, protocol, network, epsilon=epsilon, seed=seed, device=device, record=record, task=task
    )
    rand = play(game, obs, envs, protocol, None, epsilon=1.0, seed=seed, task=task) if random_baseline else None
    short = short_name(trained.task_id)
    result: dict[str, Any] = {"game": trained.task_id, **_agent(trained, short)}
    result["random"] = _agent(rand, short) if rand is not None else None
    ref = REFERENCE_SCORES.get(short)
    result["reference"] = {"random": ref[0], "human": ref[1], "source": REFERENCE_SOURCE} if ref else None
    result["protocol"] = _protocol(protocol, trained, epsilon=epsilon, learner=learner)
    return Evaluation(result, trained, rand)


def eval_json(
    scores: dict[str, Any],
    *,
    game: str,
    checkpoint: str | os.PathLike,
    run_dir: str | os.PathLike,
    run_name: str | None,
    env_steps: int,
    frames: int,
    updates: int,
    **after: Any,
) -> dict[str, Any]:
    """eval.json's dict: what was evaluated, then ``scores`` (``evaluate_network``'s result), then ``after``.

    The one layout of both evaluations; ``plots`` and ``video`` start as nothing written.
    """
    head: dict[str, Any] = {
        "game": game,
        "checkpoint": str(checkpoint),
        "run_dir": str(run_dir),
        "run_name": run_name,
        "env_steps": int(env_steps),
        "frames": int(frames),
        "updates": int(updates),
    }
    body = {k: v for k, v in scores.items() if k not in head}
    return {**head, **body, **after, "plots": {}, "video": None}


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
    task: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A training run's final evaluation: ``envs.eval`` games at ``explore.eval_epsilon``, trained vs random.

    cfg: the run's Config (``learner`` says whether ``network`` is a DQN Q-network or a
    REINFORCE policy). Seeds the envs with ``seed + 10000`` (as ``python -m
    dqnfast.evaluate`` does by default), writes ``eval.json`` and the two plots into
    ``run_dir`` (``write_outputs``); returns eval.json's dict. A failed plot is logged, never raised.
    task: the game resolved, ``(task_id, family)`` (``dqnfast.config.resolve.Resolved.game``);
    None: resolved once here.
    """
    ev = cfg.envs.eval
    if ev.episodes <= 0:
        scores: dict[str, Any] = {**summarize([]), "epsilon": cfg.explore.eval_epsilon, "random": None}
    else:
        scores = evaluate_network(
            network,
            game=cfg.game,
            obs=cfg.obs,
            envs=cfg.envs,
            protocol=ev,
            epsilon=cfg.explore.eval_epsilon,
            seed=cfg.seed + EVAL_SEED_OFFSET,
            device=device,
            learner=cfg.learner,
            task=task,
        ).result
    result = eval_json(
        scores,
        game=task_id,
        checkpoint=checkpoint,
        run_dir=run_dir,
        run_name=run_name,
        env_steps=env_steps,
        frames=env_steps * frame_skip,
        updates=updates,
    )
    return write_outputs(result, Path(run_dir), metrics_csv=Path(run_dir) / "metrics.csv", frame_skip=frame_skip)


# ---------------------------------------------------------------------- files
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
    path = Path(path)
    with atomic_open(path, "w") as f:
        f.write(json.dumps(_json_safe(result), indent=2) + "\n")
    return path


def write_plots(result: dict[str, Any], out: Path, metrics_csv: Path | None, *, frame_skip: int = 1) -> dict:
    """eval_scores.png (trained vs random) and, if metrics_csv exists, learning_curve.png; returns their paths."""
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


def write_outputs(
    result: dict[str, Any], out: Path, *, metrics_csv: Path | None, frame_skip: int, plots: bool = True
) -> dict[str, Any]:
    """Writes ``out/eval.json``, then (``plots``) the two PNGs, then eval.json again listing them; returns ``result``.

    The scores are on disk before a plot is tried; a failed plot is logged, never raised
    (a plot must never lose a finished evaluation).
    """
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "eval.json")
    if plots:
        try:
            result["plots"] = write_plots(result, out, metrics_csv, frame_skip=frame_skip)
        except Exception as e:  # noqa: BLE001 - matplotlib raises many types
            log.warning("plots: %s", " ".join(str(e).split()))
        write_json(result, out / "eval.json")
    return result


# ---------------------------------------------------------------------- table
def _fmt(x: Any, width: int = 9) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return f"{'-':>{width}}"
    if isinstance(x, float):
        return f"{x:>{width}.3f}" if abs(x) < 10 else f"{x:>{width}.1f}"
    return f"{x:>{width}}"


def _protocol_words(p: dict[str, Any]) -> str:
    prot = [
        f"{p.get('episodes')} games on {p.get('num_envs')} envs",
        f"eps {p.get('epsilon')}",
        f"seed {p.get('seed')}",
    ]
    if p.get("policy") == POLICIES[LearnerName.reinforce]:
        prot.append("greedy policy (argmax of the logits)")
    if p.get("noop_max") is not None:
        prot += [
            f"up to {p['noop_max']} no-ops",
            f"sticky actions {p['repeat_action_probability']}",
            f"cap {p['max_episode_steps']} steps ({p['max_episode_frames']} frames)",
            "episodic life" if p.get("episodic_life") else "whole games",
            "clipped rewards" if p.get("reward_clip") else "unclipped scores",
        ]
    return "protocol: " + ", ".join(prot)


def format_table(result: dict[str, Any]) -> str:
    """The printed report: a header (game, checkpoint, protocol) and a markdown table."""
    lines = [f"{result.get('game')}: {result.get('checkpoint', '')}".rstrip(": ")]
    if result.get("env_steps") is not None:
        lines.append(
            f"trained {result['env_steps']:,} agent steps ({result.get('frames', 0):,} frames), "
            f"{result.get('updates', 0):,} updates"
        )
    lines += [_protocol_words(result.get("protocol") or {}), ""]
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
