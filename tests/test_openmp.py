"""OpenMP's spin-wait: set before torch loads, never over the user's choice, and the thread rule it decides."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dqnfast.config.resolve import MAX_ALL_CORES, thread_counts
from dqnfast.openmp import SHORT_SPIN, shorten_spin, spin_is_short


def test_shorten_spin_sets_it_only_before_torch_and_never_over_the_users_choice():
    env: dict[str, str] = {}
    assert shorten_spin(env, modules={}) and env == {"GOMP_SPINCOUNT": str(SHORT_SPIN)}
    env = {}
    assert not shorten_spin(env, modules={"torch": object()}) and env == {}  # libgomp already read its environment
    for mine in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "ACTIVE"}):
        env = dict(mine)
        assert not shorten_spin(env, modules={}) and env == mine


@pytest.mark.parametrize(
    "env, short",
    [
        ({}, False),
        ({"GOMP_SPINCOUNT": "1000"}, True),
        ({"GOMP_SPINCOUNT": "1k"}, True),
        ({"GOMP_SPINCOUNT": "10k"}, False),  # measured slow beside a busy process
        ({"GOMP_SPINCOUNT": "0"}, True),
        ({"GOMP_SPINCOUNT": "300000"}, False),
        ({"GOMP_SPINCOUNT": "1M"}, False),
        ({"GOMP_SPINCOUNT": "INFINITE"}, False),
        ({"GOMP_SPINCOUNT": "lots"}, False),
        ({"OMP_WAIT_POLICY": "passive"}, True),
        ({"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "1000"}, False),
    ],
)
def test_spin_is_short_reads_libgomps_settings(env, short):
    assert spin_is_short(env) is short


def test_torch_gets_every_core_of_a_small_machine_only_with_a_short_spin_and_a_heavy_update():
    assert thread_counts(2, cpu=True, short_spin=True, heavy=True) == (2, 2, 2)
    assert thread_counts(2, cpu=True, short_spin=False, heavy=True) == (2, 2, 1)
    assert thread_counts(2, cpu=True, short_spin=True) == (2, 2, 1)  # an MLP's update: too small to split
    assert thread_counts(MAX_ALL_CORES, cpu=True, short_spin=True, heavy=True)[2] == MAX_ALL_CORES
    assert thread_counts(16, cpu=True, short_spin=True, heavy=True)[2] == 8  # more cores than measured: half
    assert thread_counts(1, cpu=True, short_spin=False)[2] == 1
    assert thread_counts(2, cpu=True, torch_threads=1, short_spin=True, heavy=True)[2] == 1  # the user's count
    assert thread_counts(8, cpu=False, short_spin=True, heavy=True)[2] is None  # CUDA: torch's own default


def test_the_command_lines_shorten_the_spin_before_torch_loads():
    code = "import os, sys; import dqnfast.cli; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(SHORT_SPIN), "False"]
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, "GOMP_SPINCOUNT": "5000"}, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["5000", "False"]  # the user's setting stays
