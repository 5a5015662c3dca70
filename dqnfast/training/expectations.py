"""What a run will cost on the machine it starts on, from speeds measured by ``benchmarks/``.

On CPU the default recipe is bound by the learner. The 300k-step runs of
``benchmarks/learning.py --budget cpu`` on a 2-core CPU VM ran at about 60 agent steps/s at the
Nature replay ratio (8 sampled transitions per agent step, batch 32, one torch thread) with the
machine to themselves, i.e. about 2.1 ms of learner work per sampled transition
(``benchmarks/RESULTS.md``; a short ``fps.py`` window on a quieter day of the same VM type
measured 117). The estimate scales that by the run's sampled transitions, so it follows
``algo.replay_ratio`` and ``algo.total_steps``; random play before ``algo.learning_starts`` runs
at thousands of steps/s and is left out. It is a figure from one machine, said as such, never a
refusal: a faster CPU (or more torch threads) takes less; the progress bar starts from it
and replaces it with the learning speed it measures.
"""

from __future__ import annotations

# Seconds of CPU learner work per sampled transition (Nature CNN, fp32, eager, one torch
# thread), from the 300k-step learning runs on the 2-core CPU VM: 1 / (60 * 8).
CPU_SECONDS_PER_SAMPLE = 1.0 / (60.0 * 8)
# A run whose estimate exceeds this on CPU is called a GPU-sized job in the console.
GPU_SIZED_SECONDS = 3 * 3600


def _human(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def cpu_learning_sps(replay_ratio: float) -> float:
    """Agent steps/s of a pixel-observation run's learning phase on the measured 2-core CPU.

    The progress bar's time estimate uses it for the learning steps until it has measured
    their speed (``dqnfast.loggers.console``).
    """
    return 1.0 / (replay_ratio * CPU_SECONDS_PER_SAMPLE)


def cpu_estimate_seconds(total_steps: int, learning_starts: int, replay_ratio: float) -> float:
    """Learner-bound seconds of a pixel-observation run on the measured 2-core CPU."""
    return max(0, total_steps - learning_starts) / cpu_learning_sps(replay_ratio)


def cpu_note(total_steps: int, learning_starts: int, replay_ratio: float) -> str:
    """One console line for a pixel-observation (Nature CNN) run on CPU."""
    est = cpu_estimate_seconds(total_steps, learning_starts, replay_ratio)
    line = (
        f"on CPU, {total_steps:,} agent steps at replay ratio {replay_ratio:g} take about {_human(est)} "
        f"at the {1 / (CPU_SECONDS_PER_SAMPLE * 8):.0f} agent steps/s measured for the default recipe on a "
        f"2-core CPU (benchmarks/RESULTS.md)"
    )
    if est > GPU_SIZED_SECONDS:
        line += "; this is a GPU-sized job (preset=cpu_budget is a 300k-step run sized for a CPU)"
    return line
