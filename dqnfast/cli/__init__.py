"""The command lines: the only modules that import Hydra or argparse.

``python -m dqnfast.train`` (``cli.train``), ``python -m dqnfast.evaluate``
(``cli.evaluate``), ``python -m dqnfast.report`` (``cli.report``); ``cli.overrides``
checks overrides in one line before Hydra runs.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # a link to the repo's conf/, shipped in wheels
