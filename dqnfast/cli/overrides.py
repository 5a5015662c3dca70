"""Command-line overrides checked against a typed config schema, before Hydra runs.

Hydra reports a wrong type or an unknown key in several lines; the CLIs
(``dqnfast.train``, ``dqnfast.evaluate``) call ``check_overrides`` first so that
such a value is one line naming the key. Part of the CLI layer: it imports
Hydra's override parser, which library modules never do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from dqnfast.config import ConfigError
from dqnfast.config.schema import Choice

__all__ = ["check_overrides", "is_hydra_key", "plain_value", "quote", "quote_paths", "sweep_jobs"]


def _parse(arg: str) -> Any:
    """Hydra's parse of one ``key=value`` override (raises on a grammar error)."""
    # Hydra's parser (a tenth of a second or more): imported on first use, so a report without a sweep plan skips it
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(arg)


def plain_value(arg: str) -> str | None:
    """The value of one ``key=value`` override as Hydra reads it (quotes removed), or None.

    None: the override does not parse, is a sweep, or its value is null, a list or a dict.
    """
    try:
        o = _parse(arg)
        v = o.value()
    except Exception:  # a grammar error: Hydra reports it (check_overrides, for non-ASCII)
        return None
    if o.is_sweep_override() or v is None or isinstance(v, (bool, list, dict)):
        return None
    return str(v)


def quote(value: str) -> str | None:
    """``value`` quoted so that Hydra's override grammar reads back exactly ``value``, or None.

    Hydra takes letters beyond ASCII, among others, only inside quotes; inside them a
    backslash is escaped only before a quote.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    for candidate in (f"'{value}'", f'"{value}"', f"'{escaped}'"):
        try:
            if _parse(f"k={candidate}").value() == value:
                return candidate
        except Exception:
            continue
    return None


def quote_paths(argv: Sequence[str], keys: Sequence[str]) -> list[str]:
    """``argv`` with the path values of ``keys`` quoted where Hydra's grammar needs it.

    ``resume=runé`` (a folder name with non-ASCII letters) is a lexer error to Hydra, while
    ``resume='runé'`` is the same path: a path key's single value that does not parse as
    given, but parses quoted to exactly what the user typed, is passed on quoted. Anything
    else is left as it is.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in keys and value and value[0] not in "'\"" and plain_value(arg) is None:
            try:
                _parse(arg)
            except Exception:
                q = quote(value)
                if q is not None:
                    arg = f"{key}={q}"
        out.append(arg)
    return out


def _unquoted_non_ascii(args: Sequence[str]) -> None:
    """Raises ConfigError for the first override Hydra cannot lex because of unquoted non-ASCII letters."""
    for arg in args:
        key, _, value = arg.partition("=")
        if value.isascii():
            continue
        try:
            _parse(arg)
        except Exception:
            q = quote(value)
            hint = f"{key}={q}" if q is not None else f"{key}='...'"
            raise ConfigError(
                key.lstrip("+~"),
                f"{value!r}: Hydra's override grammar takes characters beyond ASCII only inside quotes; write "
                f'{hint} (in a shell: "{hint}")',
            ) from None


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
    # Hydra's sweeper and parser: imported on first use (see _parse)
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
    # Hydra's parser: imported on first use (see _parse)
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    args = [a for a in argv if not a.startswith("-") and "=" in a]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra's own parser error says it best, but for letters beyond ASCII
        _unquoted_non_ascii(args)
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
