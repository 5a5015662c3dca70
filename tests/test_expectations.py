"""The start-of-run estimate a CPU user sees: from the measured speed, and a GPU-sized job named as such."""

from __future__ import annotations

import pytest

from dqnfast.training.expectations import CPU_SECONDS_PER_SAMPLE, cpu_estimate_seconds, cpu_note


def test_estimate_counts_the_learning_phase_sampled_transitions():
    # random play before learning_starts is left out; time scales with sampled transitions
    assert cpu_estimate_seconds(60_000, 50_000, 8.0) == pytest.approx(10_000 * 8 * CPU_SECONDS_PER_SAMPLE)
    assert cpu_estimate_seconds(1000, 5000, 8.0) == 0
    assert cpu_estimate_seconds(110_000, 10_000, 16.0) == pytest.approx(2 * cpu_estimate_seconds(110_000, 10_000, 8.0))


def test_the_default_budget_is_called_a_gpu_sized_job_and_the_cpu_budget_is_not():
    default = cpu_note(10_000_000, 50_000, 8.0)
    assert "10,000,000 agent steps" in default and "about 46.1 h" in default and "GPU-sized job" in default
    cpu = cpu_note(300_000, 20_000, 8.0)
    assert "about 1.3 h" in cpu and "GPU-sized" not in cpu
    assert "\n" not in default  # one console line
