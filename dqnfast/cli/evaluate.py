"""``python -m dqnfast.evaluate run=<run dir or checkpoint>``: the Hydra command line (conf/evaluate.yaml).

The evaluation itself is ``dqnfast.evaluation.evaluate`` (no Hydra).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from dqnfast.cli import CONF_DIR, discard_refused_output
from dqnfast.cli.help import print_help, wants_help
from dqnfast.cli.overrides import quote_paths
from dqnfast.config import ConfigError
from dqnfast.evaluation import EvalConfig, default_out, evaluate


def _fail(err: Exception, code: int = 2) -> None:
    discard_refused_output()  # a refused evaluation leaves no output folder
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    sys.exit(code)


def _eval_dir(run: str, out: Any = None) -> str:
    """Hydra's run dir for an evaluation (resolver ``dqnfast_eval_dir``): ``out`` or the default."""
    if out not in (None, "", "None", "null"):
        return str(out)
    try:
        from dqnfast.checkpoint import find_checkpoint

        return str(default_out(find_checkpoint(run)))
    except Exception:  # checked, with a clear message, before Hydra runs
        return str(Path("outputs") / "eval")


def _preflight(argv: list[str]) -> None:
    """One-line errors before Hydra creates any folder: no ``run=``, an unusable checkpoint, a bad key or type."""
    if any(
        a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c", "--resolve")
        or a.startswith("--cfg")
        or a.startswith("--info")
        for a in argv
    ):
        return
    from dqnfast.cli.overrides import check_overrides

    try:
        runs = [
            str(r)
            for r in check_overrides(argv, EvalConfig, hint="see python -m dqnfast.evaluate --help").get("run", [])
        ]
    except ConfigError as e:
        _fail(e)
    if not runs:
        _fail(
            ConfigError(
                "run", "give the run dir or checkpoint to evaluate: python -m dqnfast.evaluate run=outputs/DATE/TIME"
            )
        )
    from dqnfast.checkpoint import CheckpointError, find_checkpoint, load_checkpoint

    for r in runs:
        try:
            load_checkpoint(find_checkpoint(r))
        except CheckpointError as e:
            _fail(ConfigError("run", str(e)))


# Overrides whose values are paths: quoted for Hydra when its grammar cannot take them as typed (run=runé)
PATH_KEYS = ("run", "out", "hydra.run.dir")


def cli() -> None:
    """``python -m dqnfast.evaluate run=<run dir or checkpoint> [key=value ...]`` (Hydra app, conf/evaluate.yaml)."""
    sys.argv = sys.argv[:1] + quote_paths(sys.argv[1:], PATH_KEYS)
    _preflight(sys.argv[1:])
    if not OmegaConf.has_resolver("dqnfast_eval_dir"):
        OmegaConf.register_new_resolver("dqnfast_eval_dir", _eval_dir)
    ConfigStore.instance().store(name="evaluate_schema", node=EvalConfig)
    if wants_help(sys.argv[1:]):
        print_help(sys.argv[1:], app="dqnfast.evaluate", config_name="evaluate", schema=EvalConfig)

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
    def main(dcfg) -> None:
        try:
            cfg = OmegaConf.to_object(dcfg)
            evaluate(cfg, HydraConfig.get().runtime.output_dir)
        except ConfigError as e:
            _fail(e)
        except Exception as e:  # VideoError, ReplayDivergedError: one line, no traceback
            from dqnfast.envs import EnvCreationError, ReplayDivergedError
            from dqnfast.evaluation.video import VideoError

            if isinstance(e, (EnvCreationError, VideoError, ReplayDivergedError)):  # the machine, not the command
                _fail(e, 1)
            raise

    main()
