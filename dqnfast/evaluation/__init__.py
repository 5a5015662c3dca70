"""Evaluating trained agents: the protocol, eval.json, plots and videos.

The standard Atari protocol by default (Machado et al. 2018 naming): whole games (no
episodic life), unclipped scores, up to 30 no-op starts, games capped at 108k frames
(27,000 agent steps), the run's ``explore.eval_epsilon`` (0.05 by default, as the Nature
paper), sticky actions off, 100 games, each counted once (fixed quotas per env). The same
protocol is played by a uniform-random agent on the same game and seeds, so every report
reads "trained vs random". DQN agents play the argmax of their Q-values, REINFORCE agents
the argmax of their policy's logits (greedy, not sampled), both ε-greedy at that ε.

Modules: ``protocol`` (quotas, playing, statistics), ``results`` (eval.json: the one
builder both a run's final evaluation and ``python -m dqnfast.evaluate`` use; plots;
the printed table), ``agents`` (a checkpoint's network, DQN or REINFORCE), ``video``
(colour replay of a recorded game to MP4 / GIF), ``plots`` (the evaluation-score and
learning-curve PNGs), ``app`` (``python -m dqnfast.evaluate``
without Hydra).

Library use (no Hydra)::

    from dqnfast.evaluation import EvalConfig, evaluate
    result = evaluate(EvalConfig(run="outputs/2024-01-01/12-00-00", episodes=30))
"""

from dqnfast.evaluation.app import EvalConfig, check_evaluation, default_out, evaluate, validate_eval
from dqnfast.evaluation.protocol import Game, Played, play, run_episodes, summarize
from dqnfast.evaluation.results import (
    Evaluation,
    evaluate_network,
    final_evaluation,
    format_table,
    write_json,
    write_plots,
)
from dqnfast.evaluation.video import write_videos

__all__ = [
    "EvalConfig",
    "Evaluation",
    "Game",
    "Played",
    "check_evaluation",
    "default_out",
    "evaluate",
    "evaluate_network",
    "final_evaluation",
    "format_table",
    "play",
    "run_episodes",
    "summarize",
    "validate_eval",
    "write_json",
    "write_plots",
    "write_videos",
]
