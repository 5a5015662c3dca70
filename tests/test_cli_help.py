"""``--help`` of dqnfast.train and dqnfast.evaluate: every key the composed config reads, with its
value and its description (one source: the schema's docstrings), the config groups, ``+sweep``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import dqnfast.cli.train  # noqa: F401  (registers the training config's schema)
from dqnfast.cli import CONF_DIR
from dqnfast.config import Config
from dqnfast.config.keys import ONLY_WITH, REINFORCE_READS, describe, field_docs
from dqnfast.evaluation import EvalConfig
from dqnfast.loggers import flatten

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^  ([A-Za-z_][\w.]*)  +(\S.*)$")


def help_page(module: str, *args: str) -> str:
    """``python -m <module> *args --help`` in a subprocess: the real entry point."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def train_help(monkeypatch, capsys, *args: str) -> str:
    """``dqnfast.cli.train.cli`` with ``*args --help``, in this process (quicker than a subprocess)."""
    from dqnfast.cli.train import cli

    monkeypatch.setattr(sys, "argv", ["dqnfast.train", *args, "--help"])
    with pytest.raises(SystemExit) as e:
        cli()
    assert e.value.code == 0
    return capsys.readouterr().out


def rows(page: str) -> dict[str, tuple[str, str]]:
    """{key: (value, description)} of the page's key table."""
    table = page.split("== Keys", 1)[1].split("\nNot read by this config", 1)[0]
    out = {}
    for line in table.splitlines():
        m = ROW.match(line)
        if m:
            value, _, doc = m.group(2).partition("  ")
            out[m.group(1)] = (value.strip(), doc.strip())
    return out


def composed_keys(*overrides: str, config_name: str = "config") -> list[str]:
    ConfigStore.instance().store(name="evaluate_schema", node=EvalConfig)  # as dqnfast.cli.evaluate does
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name=config_name, overrides=list(overrides))
    return list(flatten(OmegaConf.to_container(cfg, resolve=False)))


# ---------------------------------------------------------------- one source
@pytest.mark.parametrize("schema", [Config, EvalConfig])
def test_every_key_of_the_schema_has_a_description_in_its_docstring(schema):
    docs = describe(schema)
    assert not [k for k, text in docs.items() if not text], "describe the key in its dataclass's docstring"


def test_a_field_name_inside_a_description_does_not_start_a_new_one():
    docs = field_docs(EvalConfig)
    assert docs["video_episode"] == "which game: first | best | median | worst score."  # "game:" inside
    assert docs["game"].startswith("the game (null: the checkpoint's")
    # a subclass inherits its base's descriptions (envs.eval is a ProtocolConfig)
    assert describe(Config)["envs.eval.noop_max"] == describe(Config)["envs.train.noop_max"]


def test_the_rules_of_what_a_run_reads_name_real_keys():
    keys = list(describe(Config))
    names = [*ONLY_WITH, *(choice for choice, _ in ONLY_WITH.values()), *REINFORCE_READS]
    for name in names:
        assert any(k == name or k.startswith(name + ".") for k in keys), name


# ------------------------------------------------------------ dqnfast.train
def test_train_help_describes_every_key_of_the_default_config():
    page = help_page("dqnfast.train")
    table = rows(page)
    rmsprop_only = {"optim.alpha", "optim.centered"}
    for key in composed_keys():
        if key in rmsprop_only or key.startswith("reinforce."):
            assert key not in table, f"{key} is listed but the default config does not read it"
            continue
        assert key in table, f"{key} missing from --help"
        assert table[key][1] and table[key][1] != "(no description)", f"{key} has no description"
    assert table["optim.lr"][0] == "0.0001" and table["game"][0] == "Pong"
    assert "optim=rmsprop: optim.alpha, optim.centered" in page
    assert "learner=reinforce: reinforce.*" in page
    assert re.search(
        r"^  preset .*c51, cartpole, cpu_budget, fast, minatar, nature, quick, rainbow, reinforce", page, re.M
    )
    assert re.search(r"^  optim +adam\*, rmsprop: The optimizer$", page, re.M)
    assert re.search(r"^  \+sweep +optuna: .*-m \+sweep=optuna", page, re.M)  # an optional group, added with +
    assert not re.search(r"^  sweep ", page, re.M)


def test_rmsprop_keys_are_listed_with_optim_rmsprop(monkeypatch, capsys):
    table = rows(train_help(monkeypatch, capsys, "optim=rmsprop"))
    assert table["optim.alpha"][0] == "0.95" and "RMSprop" in table["optim.alpha"][1]
    assert table["optim.centered"][0] == "true" and table["optim.lr"][0] == "0.00025"


def test_reinforce_help_lists_its_keys_and_not_dqns(monkeypatch, capsys):
    page = train_help(monkeypatch, capsys, "preset=reinforce")
    table = rows(page)
    assert {"reinforce.policy", "reinforce.baseline", "reinforce.value_coef"} <= set(table)
    assert table["algo.total_steps"][0] == "400000" and table["optim.lr"][0] == "0.01"
    assert "replay.capacity" not in table and "algo.batch_size" not in table and "optim.name" not in table
    assert {"replay.check_memory", "envs.resume"} <= set(table)  # the memory budget; exact resume of the envs
    note = " ".join(page.split("\nNot read by this config", 1)[1].split())
    assert re.search(r"learner=dqn: .*replay\.capacity", note) and "explore.eval_epsilon" not in note
    assert "replay.check_memory" not in note and "envs.resume" not in note
    assert re.search(r"^  preset +c51, cartpole, .*reinforce\*", page, re.M)


def test_help_with_an_unknown_option_is_one_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for module, arg in (("dqnfast.train", "optim=adamw"), ("dqnfast.evaluate", "episodes=abc")):
        proc = subprocess.run(
            [sys.executable, "-m", module, arg, "--help"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2 and proc.stdout == "", (module, proc.stdout[-500:])
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr


# --------------------------------------------------------- dqnfast.evaluate
def test_evaluate_help_describes_every_key():
    page = help_page("dqnfast.evaluate")
    table = rows(page)
    for key in composed_keys(config_name="evaluate"):
        assert key in table and table[key][1], f"{key} missing or undescribed in --help"
    assert table["run"][0] == "(required)" and table["episodes"][0] == "100"
    assert "Usage: python -m dqnfast.evaluate run=" in page
