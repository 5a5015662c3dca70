"""Evaluate a trained agent: ``python -m dqnfast.evaluate run=<run dir or checkpoint>``.

The entry point of the command (Hydra: ``dqnfast.cli.evaluate``, conf/evaluate.yaml); the
evaluation itself is the ``dqnfast.evaluation`` package, whose public names this module
also offers (``from dqnfast.evaluate import EvalConfig, evaluate``).
"""

from dqnfast.evaluation import (
    EvalConfig,
    Evaluation,
    Game,
    Played,
    default_out,
    evaluate,
    evaluate_network,
    final_evaluation,
    format_table,
    play,
    summarize,
    validate_eval,
    write_json,
    write_plots,
    write_videos,
)

__all__ = [
    "EvalConfig",
    "Evaluation",
    "Game",
    "Played",
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

if __name__ == "__main__":
    from dqnfast.cli.evaluate import cli

    cli()
