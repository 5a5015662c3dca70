"""Small helpers shared by the benchmark scripts: metric lines, timing, tables, JSON.

Every benchmark prints one ``NAME = value unit`` line per headline figure (``Metrics.emit``)
and saves one JSON file holding those figures, the full result rows, the run's configuration
and a description of the machine (``save_json``), so that figures from different machines and
commits can be told apart later.

Nothing here imports dqnfast or torch at module level: a benchmark's worker subprocess pays
only for what it uses.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = [
    "Metrics",
    "cpu_count",
    "cpu_snapshot",
    "wait_for_quiet",
    "machine_info",
    "mem_available_bytes",
    "print_table",
    "release_free_memory",
    "rss_bytes",
    "save_json",
    "time_rate",
]

_REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ metrics
class Metrics:
    """Collects ``NAME = value unit`` lines: printed as they come, saved in the JSON."""

    def __init__(self) -> None:
        self.values: dict[str, dict] = {}

    def emit(self, name: str, value: float, unit: str, note: str = "") -> None:
        self.values[name] = {"value": value, "unit": unit, **({"note": note} if note else {})}
        print(f"{name} = {_fmt(value)} {unit}", flush=True)


def _fmt(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int) or (math.isfinite(v) and v == int(v) and abs(v) >= 1000):
        return str(int(round(v)))
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) < 10 else f"{v:.4g}"


# ------------------------------------------------------------------- timing
def time_rate(
    fn: Callable[[], object],
    work: float,
    min_time: float = 0.5,
    reps: int = 3,
    warmup: int = 3,
    max_foreign: float | None = 0.1,
    max_retries: int | None = None,
    quiet_wait: float = 0.0,
) -> dict:
    """Calls ``fn`` repeatedly and returns its rate in ``work`` units per second.

    ``warmup`` calls are made first (page faults of fresh output buffers, lazy caches); then
    repetitions each call ``fn`` until ``min_time`` seconds have passed. On a shared machine
    a repetition during which other processes kept more than ``max_foreign`` cores busy is
    discarded and repeated, up to ``max_retries`` extra repetitions (default ``3 * reps``);
    if too few clean ones remain, every repetition counts and ``clean`` is False. After a
    disturbed repetition, up to ``quiet_wait`` seconds (per call of time_rate) are spent
    waiting for the machine to go quiet before the next one.

    Returns the median rate over the counted repetitions (``rate``), their min/max, every
    repetition's rate and foreign CPU, the median seconds per call, ``page_faults_per_call``
    (minor faults: fresh output memory being mapped) and ``foreign_cores`` (the highest among
    counted repetitions: 0 on a quiet machine).
    """
    for _ in range(warmup):
        fn()
    if max_retries is None:
        max_retries = 3 * reps
    clock = time.perf_counter
    faults0 = _minor_faults()
    calls = 0
    reps_all = []  # (rate, sec_per_call, foreign cores)
    wait_left = quiet_wait
    while True:
        if (
            wait_left > 0
            and reps_all
            and reps_all[-1][2] is not None
            and max_foreign is not None
            and reps_all[-1][2] > max_foreign
        ):
            wait_left -= wait_for_quiet(max_foreign, wait_left)
            fn()  # re-warm after the pause
        snap = cpu_snapshot()
        n = 0
        t0 = clock()
        while True:
            fn()
            n += 1
            dt = clock() - t0
            if dt >= min_time:
                break
        calls += n
        reps_all.append((work * n / dt, dt / n, foreign_cores(snap, cpu_snapshot())))
        clean = [r for r in reps_all if max_foreign is None or r[2] is None or r[2] <= max_foreign]
        if len(clean) >= reps or len(reps_all) >= reps + max_retries:
            break
    ok = len(clean) >= reps
    counted = clean if ok else reps_all
    rates = [r[0] for r in counted]
    foreign = [r[2] for r in counted if r[2] is not None]
    return {
        "rate": statistics.median(rates),
        "rate_min": min(rates),
        "rate_max": max(rates),
        "rates": rates,
        "sec_per_call": statistics.median(r[1] for r in counted),
        "page_faults_per_call": (_minor_faults() - faults0) / calls if faults0 is not None else None,
        "foreign_cores": max(foreign) if foreign else None,
        "clean": ok,
        "reps_discarded": len(reps_all) - len(counted),
        "reps_all": [{"rate": r[0], "foreign_cores": r[2]} for r in reps_all],
    }


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot() -> tuple[float, int, int] | None:
    """(wall seconds, CPU ticks busy on the whole machine, CPU ticks of this process)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = sum(v[:8]) - v[3] - v[4]  # all but idle and iowait
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])  # utime + stime, every thread
        return time.perf_counter(), busy, own
    except (OSError, ValueError, IndexError):
        return None


def wait_for_quiet(max_foreign: float = 0.1, timeout: float = 10.0, window: float = 0.3) -> float:
    """Sleeps until other processes use at most ``max_foreign`` cores over a ``window``.

    Returns the seconds spent (at most about ``timeout``).
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        a = cpu_snapshot()
        time.sleep(window)
        f = foreign_cores(a, cpu_snapshot())
        if f is None or f <= max_foreign:
            break
    return time.perf_counter() - t0


def _minor_faults() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError):
        return None


def foreign_cores(a, b) -> float | None:
    """Cores' worth of CPU used by other processes between two ``cpu_snapshot``s."""
    if a is None or b is None or b[0] <= a[0]:
        return None
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / _HZ / (b[0] - a[0]))


# ------------------------------------------------------------------ memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_bytes(peak: bool = False) -> int:
    """This process's resident set size (``VmRSS``; ``VmHWM`` with ``peak=True``), bytes."""
    return _status_kb("VmHWM" if peak else "VmRSS") * 1024


def release_free_memory() -> None:
    """Returns freed heap memory to the OS (glibc ``malloc_trim``), so that an RSS delta
    measured next counts every page a new object touches, not pages freed earlier and reused."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mem_available_bytes() -> int:
    """The tightest of ``MemAvailable`` and the cgroup v2 / v1 memory limits (dqnfast's own probe)."""
    from dqnfast.memory import available_memory_bytes  # torch-free

    return available_memory_bytes()


def cpu_count() -> int:
    """Cores this process may run on (affinity mask), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------- machine
def _cpuinfo() -> dict:
    info: dict = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" not in line:
                    if info:
                        break  # first processor block is enough
                    continue
                k, v = (s.strip() for s in line.split(":", 1))
                if k in ("model name", "vendor_id", "cpu family", "model", "stepping", "cpu MHz"):
                    info.setdefault(k, v)
                elif k == "flags":
                    flags = set(v.split())
                    info["flags_of_note"] = sorted(flags & {"avx2", "avx512f", "erms", "fsrm", "sse4_2"})
    except OSError:
        pass
    return info


def _caches() -> dict:
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction":
            continue
        out[f"L{level}"] = size
    return out


def _meminfo_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - not installed, or not a distribution
        return None


def machine_info(packages: Iterable[str] = ("torch", "numpy")) -> dict:
    """What the figures were measured on: CPU, cores, RAM, versions, commit, date, load."""
    cpu = _cpuinfo()
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "cpu": cpu,
        "caches": _caches(),
        "cores": cpu_count(),
        "cores_host": os.cpu_count(),
        "ram_bytes": _meminfo_total(),
        "ram_available_bytes": mem_available_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in packages},
        "git_commit": commit or None,
        "git_dirty": dirty if commit else None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": os.getloadavg(),
    }


# ------------------------------------------------------------------ output
def save_json(
    path: str | os.PathLike,
    benchmark: str,
    *,
    config: dict,
    results: list,
    metrics: Metrics,
    machine: dict | None = None,
    **extra,
) -> Path:
    """Writes one benchmark's figures, rows, configuration and machine description."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": benchmark,
        "machine": machine if machine is not None else machine_info(),
        "config": config,
        "metrics": metrics.values,
        "results": results,
        **extra,
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(o):
    try:  # numpy scalars and arrays without importing numpy here
        return o.tolist()
    except AttributeError:
        return str(o)


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], title: str = "") -> str:
    """Prints rows as a fixed-width table; ``columns`` are (key, header) pairs. Returns it."""
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.rjust(w) for h, w in zip(heads, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for c in cells:
        lines.append("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def default_learner(num_actions: int, device, compile_mode: str | None = None, amp_dtype=None):
    """The default recipe's learner (double DQN, Huber, clip 10, Adam as ``OptimConfig()``) on a fresh Nature
    CNN, its target a copy, never synced: what the learner benchmarks time. Seed torch before calling."""
    import torch

    from dqnfast.agent.dqn import Learner, make_optimizer
    from dqnfast.agent.networks import NatureCNN
    from dqnfast.config import OptimConfig

    device = torch.device(device)
    online = NatureCNN(4, num_actions).to(device)
    target = NatureCNN(4, num_actions).to(device)
    target.load_state_dict(online.state_dict())
    if compile_mode is not None:
        torch._dynamo.reset()
    opt = make_optimizer(online.parameters(), OptimConfig(), device=device, compile_mode=compile_mode)
    return Learner(
        online,
        target,
        opt,
        double=True,
        loss="huber",
        max_grad_norm=10.0,
        target_update_period=10**9,
        device=device,
        compile=compile_mode,
        amp_dtype=amp_dtype,
    )


def budget_overrides(game: str, learning_starts: int, steps: int, *, low_epsilon: bool) -> list[str]:
    """Hydra overrides of a short CPU-budget run timed in its learning phase: ``learning_starts`` random steps,
    then ``steps`` of learning, a small ring, no evaluation or checkpoint; ``low_epsilon``: epsilon at its end
    value from the first update, as deep in a run (every step acts greedily)."""
    return [
        f"game={game}",
        "preset=cpu_budget",
        "device=cpu",
        f"algo.learning_starts={learning_starts}",
        f"algo.total_steps={learning_starts + steps}",
        "replay.capacity=20000",
        *(["explore.decay_steps=1"] if low_epsilon else []),
        "envs.eval.episodes=0",
        "logger.checkpoint_every=0",
        "logger.progress=false",
    ]
