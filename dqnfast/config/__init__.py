"""The run's configuration: the typed schema (``schema``), every key's description and
whether a config reads it (``keys``), and the one place where every ``auto``/null becomes a
concrete value (``resolve``).

Plain Python: nothing here imports Hydra, so a ``Config()`` can be built and trained
without it (``dqnfast.training.train``).
"""

from dqnfast.config import schema
from dqnfast.config.schema import *  # noqa: F403 - the package offers the schema's public names

__all__ = list(schema.__all__)
