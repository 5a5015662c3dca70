"""Which learner settings make a CPU-only training run fastest, end to end?

Runs the real CLI (``python -m dqnfast.train``) once per setting, one after another on the
same machine, with the CPU-budget recipe on an Atari game, and reads the learning phase's
agent steps/s from each run's ``metrics.csv``. Each setting is a set of Hydra overrides
(``torch_threads``, ``algo.compile``, ``algo.amp``, ``algo.channels_last``); the figure that
matters is each setting's steps/s as a multiple of the baseline's (the first setting),
measured in the same invocation. Run it on a quiet machine: every other busy core shows up
as a slower setting.

    python benchmarks/cpu_defaults.py                     # the default grid, Breakout
    python benchmarks/cpu_defaults.py --steps 3000 --settings "torch_threads=1" "torch_threads=2"
    python benchmarks/cpu_defaults.py --rounds 2 --settings peer default   # each alone, A B A B

Writes ``benchmarks/results/cpu_defaults.json`` (``--out`` to change) and prints a table.
A setting that changes the maths (``algo.amp=bf16``) is a speed figure only here; whether it
learns as well is a question for ``benchmarks/learning.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import budget_overrides, cpu_count, machine_info  # noqa: E402

# One thread vs all cores, eager vs compiled, fp32 vs bf16 autocast, NCHW vs NHWC.
DEFAULT_SETTINGS = [
    "torch_threads=1",
    "torch_threads=2",
    "torch_threads=1 algo.amp=bf16",
    "torch_threads=2 algo.amp=bf16",
    "torch_threads=2 algo.amp=bf16 algo.channels_last=true",
    "torch_threads=1 algo.compile=true",
    "torch_threads=2 algo.compile=true",
    "torch_threads=2 algo.compile=true algo.amp=bf16",
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="Breakout")
    p.add_argument("--steps", type=int, default=6000, help="agent steps of learning measured per setting")
    p.add_argument("--learning-starts", type=int, default=2000, help="agent steps of random play first")
    p.add_argument("--warmup-rows", type=int, default=2, help="metric rows after learning starts to skip")
    p.add_argument("--log-every", type=int, default=500, help="agent steps per metrics row")
    p.add_argument(
        "--low-epsilon",
        action="store_true",
        help="epsilon at its end (0.01) from the first update, as deep in a run's learning phase, where every "
        "step of the peer's one env runs its network's forward",
    )
    p.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="space-separated overrides each")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the settings in turn this many times (A B A B): on a shared machine each round's ratios are "
        "taken against that round's baseline and the median ratio reported",
    )
    p.add_argument("--out", type=Path, default=_HERE / "results" / "cpu_defaults.json")
    return p.parse_args(argv)


# The setting that runs the peer instead of dqnfast: CleanRL's dqn_atari.py recipe (peer_dqn.py --learn) with
# the same game, warm-up, length and replay size, torch on its own default threads (every core), so that
# "peer" beside dqnfast's settings in one invocation is the alone-against-alone ratio, A B A B with --rounds.
PEER = "peer"
DEFAULT = "default"  # dqnfast with no override: its defaults as `python -m dqnfast.train` picks them here


def _command(args, setting: str, folder: Path) -> list[str]:
    if setting.split()[:1] == [PEER]:
        return [
            sys.executable,
            str(_HERE / "peer_dqn.py"),
            "--learn",
            "--game",
            args.game,
            "--learning-starts",
            str(args.learning_starts),
            "--total-steps",
            str(args.learning_starts + args.steps),
            "--capacity",
            "20000",
            "--log-every",
            str(args.log_every),
            "--eval-episodes",
            "1",
            "--out",
            str(folder),
            *(["--exploration-steps", str(args.learning_starts)] if args.low_epsilon else []),
            *setting.split()[1:],
        ]
    return [
        sys.executable,
        "-m",
        "dqnfast.train",
        *budget_overrides(args.game, args.learning_starts, args.steps, low_epsilon=args.low_epsilon),
        f"logger.log_every={args.log_every}",
        f"hydra.run.dir={folder}",
        *(t for t in setting.split() if t != DEFAULT),
    ]


def run_setting(args, setting: str, folder: Path) -> dict:
    cmd = _command(args, setting, folder)
    t0 = time.perf_counter()
    cpu0 = _other_cpu()
    proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"setting": setting, "error": tail[0][:200], "wall_s": wall}
    with open(folder / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["env_steps"]) > args.learning_starts]
    sps = [float(r["sps"]) for r in rows[args.warmup_rows :]]
    if not sps:
        return {"setting": setting, "error": "no learning-phase rows: raise --steps", "wall_s": wall}
    log = folder / "train.log"  # dqnfast's start-up line: the threads, precision and compile mode it chose
    chosen = [ln.split("cpu: ", 1)[1] for ln in log.read_text().splitlines() if "cpu: " in ln] if log.is_file() else []
    return {
        "setting": setting,
        "cpu_line": chosen[0] if chosen else None,
        "sps_median": statistics.median(sps),
        "sps_min": min(sps),
        "sps_max": max(sps),
        "rows": len(sps),
        "wall_s": wall,
        "load_avg_1m_after": os.getloadavg()[0],
        "cpu_s_machine": _other_cpu() - cpu0,
    }


def _combine(runs: list[dict]) -> dict:
    """One setting over several rounds: the median of its steps/s and of its ratios to each round's baseline."""
    ok = [r for r in runs if "sps_median" in r]
    if not ok:
        return runs[0]
    out = {
        "setting": ok[0]["setting"],
        "sps_median": statistics.median(r["sps_median"] for r in ok),
        "rounds": runs,
    }
    ratios = [r["vs_baseline"] for r in ok if "vs_baseline" in r]
    if ratios:
        out["vs_baseline"] = statistics.median(ratios)
        out["vs_baseline_each_round"] = ratios
    return out


def _other_cpu() -> float:
    """Seconds of CPU the whole machine has spent busy (from /proc/stat), 0 where unknown."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
        ticks = [int(x) for x in parts]
        busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv=None) -> int:
    args = parse_args(argv)
    rounds: list[list[dict]] = []
    with tempfile.TemporaryDirectory(prefix="dqnfast_cpu_defaults_") as tmp:
        for k in range(max(1, args.rounds)):
            this = []
            for i, setting in enumerate(args.settings):
                r = run_setting(args, setting, Path(tmp) / f"r{k}s{i}")
                this.append(r)
                if "error" in r:
                    print(f"{setting:60s} failed: {r['error']}", flush=True)
                else:
                    print(
                        f"{setting:60s} {r['sps_median']:7.1f} steps/s "
                        f"(min {r['sps_min']:.1f}, max {r['sps_max']:.1f}, {r['rows']} rows, {r['wall_s']:.0f} s)",
                        flush=True,
                    )
            base = this[0].get("sps_median")
            for r in this:
                if base and "sps_median" in r:
                    r["vs_baseline"] = r["sps_median"] / base
            rounds.append(this)
    results = rounds[0] if len(rounds) == 1 else [_combine([rd[i] for rd in rounds]) for i in range(len(args.settings))]
    print(f"\nas a multiple of the first setting ({args.settings[0]}), median over {len(rounds)} round(s):")
    for r in results:
        print(f"  {r['setting']:60s} {r.get('vs_baseline', float('nan')):.2f}x")
    doc = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "cores": cpu_count(),
        "game": args.game,
        "learning_starts": args.learning_starts,
        "steps": args.steps,
        "rounds": args.rounds,
        "low_epsilon": args.low_epsilon,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
