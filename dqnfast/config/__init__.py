"""The run's configuration: the typed schema (``schema``), every key's description and
whether a config reads it (``keys``), and the one place where every ``auto``/null becomes a
concrete value (``resolve``).

Plain Python: nothing here imports Hydra, so a ``Config()`` can be built and trained
without it (``dqnfast.training.train``).
"""

from dqnfast.config.schema import (
    NETWORK_NAMES,
    OBS_KINDS,
    AlgoConfig,
    Config,
    ConfigError,
    EnvsConfig,
    EvalProtocolConfig,
    ExploreConfig,
    LoggerConfig,
    NetworkConfig,
    OptimConfig,
    ProtocolConfig,
    ReinforceConfig,
    ReplayConfig,
    validate,
)

__all__ = [
    "AlgoConfig",
    "Config",
    "ConfigError",
    "EnvsConfig",
    "EvalProtocolConfig",
    "ExploreConfig",
    "LoggerConfig",
    "NetworkConfig",
    "OptimConfig",
    "ProtocolConfig",
    "ReinforceConfig",
    "ReplayConfig",
    "NETWORK_NAMES",
    "OBS_KINDS",
    "validate",
]
