"""Command-line overrides checked against a typed config schema, before Hydra runs.

Hydra reports a wrong type or an unknown key in several lines; the CLIs
(``dqnfast.train``, ``dqnfast.evaluate``) call ``check_overrides`` first so that
such a value is one line naming the key. Part of the CLI layer: it imports
Hydra's override parser, which library modules never do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from dqnfast.config import ConfigError
from dqnfast.config.schema import Choice

__all__ = ["check_overrides", "is_hydra_key", "sweep_jobs"]


def is_hydra_key(key: str) -> bool:
    """Whether an override's key or group configures Hydra (``hydra.sweep.dir``, ``hydra/launcher``): not a job's."""
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def sweep_jobs(args: Sequence[str], params: Mapping[str, Any] | None = None) -> tuple[list[list[str]], set[str]] | None:
    """The overrides of every job of a basic-sweeper multirun, in the order Hydra launches them.

    args: the command line's overrides (those of Hydra itself are left out, as they are
    from a job's ``overrides.yaml``). params: ``hydra.sweeper.params`` (a sweep kept in a
    config), put before the command line's as Hydra's basic sweeper does. Returns (one
    list of ``key=value`` strings per job, the keys that take several values), or None when
    the sweep cannot be listed beforehand (an interval sweep, an override Hydra's parser
    refuses: Hydra reports those itself).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [f"{k}={v}" for k, v in (params or {}).items()]
    given += [a for a in args if not a.startswith("-") and "=" in a]
    try:
        overrides = [o for o in OverridesParser.create().parse_overrides(given) if not is_hydra_key(o.key_or_group)]
        (jobs,) = BasicSweeper.split_arguments(overrides, None)
    except Exception:  # Hydra's own error says it best, when it launches the sweep
        return None
    swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
    return jobs, swept


def check_overrides(
    argv: Sequence[str], schema: type, *, hint: str, groups: Sequence[str] = (), conf_dir: Path | None = None
) -> dict[str, list[Any]]:
    """Checks every ``key=value`` in ``argv`` against ``schema`` (a config dataclass).

    Each value of a sweep (``seed=0,1,2``) is checked; interval and range sweeps
    (for sweepers) and ``hydra.*``, ``+key``, ``~key`` overrides are left to Hydra.
    A key in ``groups`` must name a YAML file in ``conf_dir/<group>/``. ``hint``
    ends the message for an unknown key. Returns ``{key: [values]}`` of what was
    checked. Raises ``ConfigError(key, one-line message)``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra's own parser error says it best
        return {}
    typed = OmegaConf.structured(schema)
    checked: dict[str, list[Any]] = {}
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete() or o.is_add() or o.package:
            continue
        try:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        except Exception:  # interval/range sweeps: checked per trial
            continue
        checked[key] = values
        if key in groups:
            for option in values:
                if option is not None and not (conf_dir / key / f"{option}.yaml").exists():
                    options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
                    raise ConfigError(key, f"unknown option {option!r}; choose one of {', '.join(options)}")
            continue
        for value in values:
            try:
                OmegaConf.update(OmegaConf.structured(typed), key, value, merge=True)
            except Exception as e:  # omegaconf ValidationError / ConfigKeyError
                current = OmegaConf.select(typed, key, default=None)
                if isinstance(current, Choice):  # the schema's own one-line message for a choice
                    type(current).parse(value, key)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if "not in" in first or "Key '" in first:
                    first = f"no such key ({hint})"
                raise ConfigError(key, first) from None
    return checked
