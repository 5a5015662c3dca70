"""The start-of-run estimate a CPU user sees: from the measured speed, and a GPU-sized job named as such.

The figures are checked against their rule (learning-phase agent steps x replay ratio x the
measured seconds per sampled transition), never against a figure of one machine: a new
measurement changes ``CPU_SECONDS_PER_SAMPLE`` and no test.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from dqnfast.training.expectations import (
    CPU_SECONDS_PER_SAMPLE,
    GPU_SIZED_SECONDS,
    cpu_estimate_seconds,
    cpu_note,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
UNIT_SECONDS = {"min": 60, "h": 3600, "days": 86400}


def recipe(*presets: str) -> tuple[int, int, float]:
    """(total_steps, learning_starts, replay_ratio) of the default recipe with ``presets`` applied."""
    algo = yaml.safe_load((CONF / "algo" / "default.yaml").read_text())
    for name in presets:
        algo.update(yaml.safe_load((CONF / "preset" / f"{name}.yaml").read_text()).get("algo", {}))
    return int(algo["total_steps"]), int(algo["learning_starts"]), float(algo["replay_ratio"])


def said_seconds(note: str) -> tuple[float, str]:
    """The duration a note says ("take about 46.1 h"), in seconds, and its unit."""
    m = re.search(r"take about ([0-9.]+) (min|h|days) ", note)
    assert m, note
    return float(m[1]) * UNIT_SECONDS[m[2]], m[2]


def test_estimate_counts_the_learning_phase_sampled_transitions():
    # random play before learning_starts is left out; time scales with sampled transitions
    assert cpu_estimate_seconds(60_000, 50_000, 8.0) == pytest.approx(10_000 * 8 * CPU_SECONDS_PER_SAMPLE)
    assert cpu_estimate_seconds(1000, 5000, 8.0) == 0
    assert cpu_estimate_seconds(110_000, 10_000, 16.0) == pytest.approx(2 * cpu_estimate_seconds(110_000, 10_000, 8.0))


@pytest.mark.parametrize(
    "seconds, unit",
    [(30 * 60, "min"), (59 * 60, "min"), (3600, "h"), (5 * 3600, "h"), (47 * 3600, "h"), (2 * 86400, "days")],
)
def test_the_note_says_the_estimate_of_its_inputs_in_a_readable_unit(seconds, unit):
    starts, ratio = 20_000, 8.0
    total = starts + math.ceil(seconds / (ratio * CPU_SECONDS_PER_SAMPLE))  # the rule gives it >= `seconds`
    expect = cpu_estimate_seconds(total, starts, ratio)
    note = cpu_note(total, starts, ratio)
    got, said_unit = said_seconds(note)
    assert said_unit == unit, note
    # rounded to one decimal of the unit (minutes: whole ones)
    assert got == pytest.approx(expect, abs=UNIT_SECONDS[unit] * (0.5 if unit == "min" else 0.05)), note
    assert f"{total:,} agent steps at replay ratio {ratio:g}" in note
    assert f"at the {1 / (8 * CPU_SECONDS_PER_SAMPLE):.0f} agent steps/s measured" in note
    assert ("GPU-sized job" in note) == (expect > GPU_SIZED_SECONDS)
    assert "\n" not in note  # one console line


def test_the_default_budget_is_called_a_gpu_sized_job_and_the_cpu_budget_it_points_to_is_not():
    default, cpu = cpu_note(*recipe()), cpu_note(*recipe("cpu_budget"))
    assert said_seconds(default)[0] == pytest.approx(cpu_estimate_seconds(*recipe()), rel=0.05)
    assert "GPU-sized job" in default and "preset=cpu_budget" in default
    # the preset the note recommends is not itself called GPU-sized
    assert cpu_estimate_seconds(*recipe("cpu_budget")) <= GPU_SIZED_SECONDS
    assert "GPU-sized" not in cpu
