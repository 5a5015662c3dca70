"""Every config key, its description, and whether a run reads it: what ``--help`` lists.

The descriptions have one source: the config dataclasses' docstrings, where each field is
described by a ``name: text`` segment that starts a docstring line or follows the end of a
sentence (``.`` or ``;``); a subclass's segment wins over its base's. ``describe(Config)``
maps every dotted key to its text, and a test checks that none is missing, so a key added
without a description fails the suite. The YAML files under ``conf/`` hold values only.

Plain Python: no Hydra.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Mapping

__all__ = ["ONLY_WITH", "REINFORCE_READS", "describe", "field_docs", "needs", "summary"]

# Keys that a run reads only under one choice: key (or section) -> (choosing key, its value).
ONLY_WITH: dict[str, tuple[str, str]] = {
    "optim.alpha": ("optim.name", "rmsprop"),
    "optim.centered": ("optim.name", "rmsprop"),
    "reinforce": ("learner", "reinforce"),
}
# What learner=reinforce reads (keys or sections; every top-level key too), as
# ``ReinforceConfig``'s docstring says: the rest of algo, replay, explore, network and optim
# is DQN's. Classic control only, so the Atari-only env keys are not read either.
REINFORCE_READS: tuple[str, ...] = (
    "envs.num_envs",
    "envs.num_threads",
    "envs.resume",
    "envs.eval.episodes",
    "envs.eval.num_envs",
    "algo.total_steps",
    "algo.gamma",
    "network.mlp_hidden",
    "replay.check_memory",
    "optim.lr",
    "optim.eps",
    "explore.eval_epsilon",
    "logger",
    "reinforce",
)


def _own_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses write when there is no docstring
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def _plain(text: str) -> str:
    return re.sub(r"``([^`]*)``", r"\1", text).strip().rstrip(";").strip()


def field_docs(cls: type) -> dict[str, str]:
    """{field name: description} from the ``name: text`` segments of ``cls``'s docstring and its bases'."""
    names = sorted((f.name for f in dataclasses.fields(cls)), key=len, reverse=True)
    start = re.compile(r"(?:^|(?<=[.;] ))(" + "|".join(map(re.escape, names)) + r"): ")
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        text = _own_doc(klass)
        found = list(start.finditer(text))
        for m, nxt in zip(found, found[1:] + [None]):
            docs[m.group(1)] = _plain(text[m.end() : nxt.start() if nxt else len(text)])
    return docs


def summary(cls: type) -> str:
    """The first sentence of ``cls``'s docstring: what a config section is."""
    text = _own_doc(cls)
    return _plain(re.split(r"(?<=\.) ", text, maxsplit=1)[0]).rstrip(".")


def describe(schema: type, prefix: str = "") -> dict[str, str]:
    """{dotted key: description} for every leaf field of ``schema``, nested dataclasses included, in order.

    A field without a description maps to "".
    """
    docs = field_docs(schema)
    out: dict[str, str] = {}
    for f in dataclasses.fields(schema):
        # the annotations are strings (postponed evaluation): a section is known by its default
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out.update(describe(type(default), f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = docs.get(f.name, "")
    return out


def _within(key: str, section: str) -> bool:
    return key == section or key.startswith(section + ".")


def _lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return getattr(node, "value", node)  # an Enum member: its value


def needs(key: str, config: Mapping[str, Any]) -> str | None:
    """The choice (``"optim=rmsprop"``) under which a run reads ``key``; None when ``config`` reads it.

    ``config`` is the composed config as nested dicts. ``ONLY_WITH`` names the keys read under
    one choice; with ``learner=reinforce`` only the top-level keys and ``REINFORCE_READS`` are read.
    """
    if str(_lookup(config, "learner")).lower() == "reinforce" and "." in key:
        if not any(_within(key, s) for s in REINFORCE_READS):
            return "learner=dqn"
    for section, (choice, value) in ONLY_WITH.items():
        if _within(key, section) and str(_lookup(config, choice)).lower() != value:
            return f"{choice.split('.')[0]}={value}"  # optim.name=rmsprop: the option optim=rmsprop
    return None
