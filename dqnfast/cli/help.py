"""``--help`` of the Hydra command lines: the config groups, then every key the composed config
reads, with its value and its description.

Hydra's help template can only paste the composed config as YAML, without a word about any
key; the CLIs print this page instead (``--hydra-help`` stays Hydra's). The descriptions come
from the schema's docstrings (``dqnfast.config.keys``); which keys are listed follows the
config composed from the command line's overrides, so ``optim=rmsprop --help`` shows
RMSprop's keys and ``preset=reinforce --help`` REINFORCE's.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import Any, Mapping, Sequence

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dqnfast.cli import CONF_DIR
from dqnfast.config.keys import describe, needs
from dqnfast.loggers import flatten

HELP_FLAGS = ("--help", "-h")


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the command line asks for ``--help`` (Hydra's ``--hydra-help`` is not this)."""
    return any(a in HELP_FLAGS for a in argv)


def help_overrides(argv: Sequence[str], skip: Sequence[str] = ()) -> list[str]:
    """The ``key=value`` overrides of ``argv`` that shape the listed keys: no flags, no ``hydra*``, none in ``skip``."""
    out = []
    for a in argv:
        if a.startswith("-") or "=" not in a:
            continue
        key = a.split("=", 1)[0].lstrip("+~")
        if key.startswith("hydra") or key in skip:
            continue
        out.append(a)
    return out


def compose_for_help(config_name: str, overrides: list[str], job_name: str) -> Any:
    """The config Hydra composes for these overrides, with its ``hydra`` node (help texts, choices)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name=job_name):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def format_value(v: Any) -> str:
    """A value as it is written on the command line (YAML's spelling)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if v == "???":
        return "(required)"
    if isinstance(v, str) and v == "":
        return "''"
    return str(v)


def _compress(keys: list[str], all_keys: Sequence[str]) -> list[str]:
    """``keys``, each (sub)section whose keys are all in ``keys`` written once as ``section.*``."""
    out: list[str] = []
    for k in keys:
        parts = k.split(".")
        name = k
        for i in range(1, len(parts)):  # the widest section wholly in keys
            section = ".".join(parts[:i]) + "."
            if all(x in keys for x in all_keys if x.startswith(section)):
                name = section + "*"
                break
        if name not in out:
            out.append(name)
    return out


def _key_table(values: Mapping[str, Any], docs: Mapping[str, str], width: int) -> list[str]:
    """One entry per key: ``key  value  description``, the description wrapped under itself."""
    kw = min(max(len(k) for k in values), 36)
    vw = min(max(len(format_value(v)) for v in values.values()), 14)
    lines: list[str] = []
    section = None
    for key, value in values.items():
        top = key.split(".")[0] if "." in key else None
        if top != section:
            lines.append("")
            section = top
        head = f"  {key:<{kw}}  {format_value(value):<{vw}}  "
        indent = " " * min(len(head), kw + vw + 6)
        text = docs.get(key) or "(no description)"
        lines += textwrap.wrap(text, width, initial_indent=head, subsequent_indent=indent) or [head.rstrip()]
    return lines


def render(
    cfg: Any,
    schema: type,
    *,
    groups: Mapping[str, str] = {},
    optional_groups: Mapping[str, str] = {},
    width: int | None = None,
) -> str:
    """The help page of a composed config (``compose_for_help``) typed by ``schema``.

    groups: {group: what it is} listed with their options (the chosen one starred);
    optional_groups: {group: what it is} that only a ``+group=option`` override adds.
    """
    width = width or max(80, min(shutil.get_terminal_size((100, 24)).columns, 140))
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    container.pop("hydra", None)
    docs = describe(schema)
    values = flatten(container)
    shown = {k: v for k, v in values.items() if needs(k, container) is None}
    hidden: dict[str, list[str]] = {}
    for k in values:
        if k not in shown:
            hidden.setdefault(needs(k, container), []).append(k)

    out = [OmegaConf.select(cfg, "hydra.help.header", default="").rstrip()]
    if groups or optional_groups:
        choices = OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}
        gw = max(len(g) + 1 for g in [*groups, *optional_groups])
        out += ["", "== Config groups: group=option (* = this config's) =="]
        for name, what in [*groups.items(), *optional_groups.items()]:
            options = sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml"))
            chosen = choices.get(name)
            listed = ", ".join(f"{o}*" if o == chosen else o for o in options)
            label = f"+{name}" if name in optional_groups else name
            out.append(f"  {label:<{gw}}  {listed}: {what}")
    out += ["", "== Keys: key=value (the values of this config) =="]
    out += _key_table(shown, docs, width)
    if hidden:
        out += ["", "Not read by this config, listed with the choice that reads them:"]
        for choice, keys in hidden.items():
            text = ", ".join(_compress(keys, list(values)))
            out += textwrap.wrap(f"{choice}: {text}", width, initial_indent="  ", subsequent_indent="    ")
    footer = OmegaConf.select(cfg, "hydra.help.footer", default="").rstrip()
    out += ["", footer, "Hydra's own flags and groups: --hydra-help"] if footer else ["", "Hydra: --hydra-help"]
    return "\n".join(out) + "\n"


def print_help(
    argv: Sequence[str],
    *,
    app: str,
    config_name: str,
    schema: type,
    groups: Mapping[str, str] = {},
    optional_groups: Mapping[str, str] = {},
) -> None:
    """Prints the help page for the config that ``argv``'s overrides compose, and exits 0.

    An override that does not compose is one line on stderr and exit status 2.
    """
    try:
        cfg = compose_for_help(config_name, help_overrides(argv, skip=list(optional_groups)), app)
    except Exception as e:  # Hydra's composition errors are several lines: the first says it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {first} (see python -m {app} --help)", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(render(cfg, schema, groups=groups, optional_groups=optional_groups))
    sys.exit(0)
