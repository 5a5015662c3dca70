"""A command touches only its own files: a refusal removes only the folders it made, a run cleans only
its own temporary files and never writes through a link out of its folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CLI_ENV

from dqnfast.atomic import atomic_open, is_temp_file, temp_path
from dqnfast.config import ConfigError
from dqnfast.folders import deepest_existing, remove_made_dirs
from dqnfast.training.rundir import claim, clean_temp_files, precheck, release_all

REFUSED = ["preset=cartpole", "algo.total_steps=3000", "logger.progress=false", "optim.lr=-1"]


def _refused(cwd, *args: str, in_process=None) -> None:
    """``python -m dqnfast.train REFUSED *args`` in a process of its own, or through
    ``in_process`` (the ``train_in_process`` fixture): refused in one line."""
    if in_process is None:
        proc = subprocess.run(
            [sys.executable, "-m", "dqnfast.train", *REFUSED, *args],
            cwd=cwd,
            env=CLI_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        code, err = proc.returncode, proc.stderr
    else:
        code, err = in_process(*REFUSED, *args, cwd=cwd)
    assert code == 2, err[-2000:]
    assert err.strip() == "error: optim.lr: must be > 0, got -1.0"


def test_a_refused_run_leaves_the_users_folders_and_removes_the_ones_it_made(tmp_path, train_in_process):
    work = tmp_path / "work"
    (work / "mine").mkdir(parents=True)
    (work / "e2").mkdir()
    (work / "outputs").mkdir()
    (work / "kept").mkdir()
    (work / "kept" / "train.log").write_text("the user's own log\n")
    # the first in a process of its own, the others through the same entry point in this one
    _refused(work, "hydra.run.dir=mine/new")  # a new folder inside the user's
    _refused(work, "hydra.run.dir=e2", in_process=train_in_process)  # the user's empty folder itself
    _refused(work, in_process=train_in_process)  # the default outputs/DATE/TIME under the user's outputs/
    _refused(work, "hydra.run.dir=kept", in_process=train_in_process)  # a folder with a file Hydra appends to
    outside = f"hydra.run.dir={tmp_path / 'x' / 'a' / 'b' / 'new'}"
    _refused(work, outside, in_process=train_in_process)  # outside the working dir
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "work",
        "work/e2",
        "work/kept",
        "work/kept/train.log",
        "work/mine",
        "work/outputs",
    ]
    assert (work / "kept" / "train.log").read_text().startswith("the user's own log\n")


def test_the_folders_a_command_made_are_told_from_those_it_found(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    (tmp_path / "a").mkdir()
    found = deepest_existing(target)
    assert found == tmp_path / "a"
    target.mkdir(parents=True)
    (target / "kept").write_text("x")
    remove_made_dirs(target, found)  # not empty: nothing goes
    assert (target / "kept").exists()
    (target / "kept").unlink()
    remove_made_dirs(target, found)
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a").is_dir()


def test_only_dqnfasts_own_temporary_files_are_cleaned(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    ours = [temp_path(tmp_path / "metrics.csv", pid=4242), temp_path(tmp_path / "checkpoints" / "step_1.pt", pid=7)]
    users = [tmp_path / ".draft.tmp", tmp_path / ".report.tmp.bak", tmp_path / "checkpoints" / ".notes.tmp"]
    for f in ours + users:
        f.write_text("x")
    (tmp_path / ".cache.tmpdir").mkdir()  # a folder with a temporary-looking name
    looks_ours = temp_path(tmp_path / "folder", pid=5)
    looks_ours.mkdir()  # dqnfast's name, but a folder: not a file dqnfast wrote
    assert [is_temp_file(f) for f in ours] == [True, True] and not is_temp_file(looks_ours)
    clean_temp_files(tmp_path)
    assert not any(f.exists() for f in ours)
    assert all(f.exists() for f in users) and (tmp_path / ".cache.tmpdir").is_dir() and looks_ours.is_dir()


def test_an_atomic_write_leaves_no_temporary_file_and_names_it_as_its_own(tmp_path):
    seen = []
    with atomic_open(tmp_path / "metrics.csv", "w") as f:
        seen = [p for p in tmp_path.iterdir() if is_temp_file(p)]
        f.write("a,b\n")
    assert [p.name for p in seen] == [f".metrics.csv.dqnfast-tmp{os.getpid()}"]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("link", ["checkpoints", "metrics.csv", "train.log", "checkpoints/step_000000000100.pt"])
def test_a_run_never_writes_through_a_link_out_of_its_folder(tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".draft.tmp").write_text("the user's")
    (outside / "metrics.csv").write_text("the user's")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    target = outside if link == "checkpoints" else outside / "metrics.csv"
    if link == "checkpoints":
        (run / "checkpoints").rmdir()
    (run / link).symlink_to(target)
    refusal = r"is a symbolic link .*a run writes only inside its own folder"
    with pytest.raises(ConfigError, match=refusal):  # the command line's check, before Hydra writes
        precheck(run, source=None)
    release_all()
    with pytest.raises(ConfigError, match=refusal):  # a library run's
        with claim(run, source=None, ck=None, replay=False):
            pass
    assert (outside / ".draft.tmp").read_text() == "the user's"
    assert (outside / "metrics.csv").read_text() == "the user's"
    assert sorted(p.name for p in outside.iterdir()) == [".draft.tmp", "metrics.csv"]


def test_a_users_metrics_csv_is_never_overwritten_by_a_new_run(tmp_path):
    (tmp_path / "metrics.csv").write_text("the user's numbers\n")
    with pytest.raises(ConfigError, match=r"holds a metrics.csv and no checkpoint .* move it away"):
        precheck(tmp_path, source=None)
    release_all()
    assert (tmp_path / "metrics.csv").read_text() == "the user's numbers\n"
    (tmp_path / "metrics.csv").write_text("env_steps,frames,episodes\n")  # a run stopped at start-up: its header
    precheck(tmp_path, source=None)  # nothing of it is lost: the same command starts the run again
    release_all()
