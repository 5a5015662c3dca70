"""Where one training step's time goes: the real loop, timed part by part in its learning phase.

Runs ``dqnfast.training.train`` (the loop the CLI runs) on an Atari game with the CPU-budget recipe
and wraps the parts of its step with timers: ``recv`` (waiting for envpool's results), ``add`` (the
replay ring storing the newest frames), ``act`` (the batched epsilon-greedy forward), ``send``
(handing the actions to envpool, which steps them in its threads while the loop learns),
``sample`` (drawing a batch from the ring) and ``update`` (one gradient step); ``other`` is the
rest of the step (Python, counters, logging). Only the steps after the one with the first update count.

    python benchmarks/loop_profile.py                       # torch on 1 thread, then as the CLI picks
    python benchmarks/loop_profile.py --threads 1 2 --steps 3000

Each setting runs in its own process (torch's threads are fixed at start), one after another.
Prints a table of milliseconds per loop step (one step = ``envs.num_envs`` agent steps) and each
part's share, and writes JSON (``--out``) with the machine's description. What it answers: how much
of a step is the learner (the bound) and how much is serial work that overlapping acting with
learning could hide.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
for p in (str(_REPO), str(_HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

PARTS = ("recv", "add", "act", "send", "sample", "update")


def worker(args: argparse.Namespace) -> dict:
    """One training run with its step's parts timed; returns ms per loop step for each part."""
    from common import budget_overrides

    from dqnfast.openmp import shorten_spin

    shorten_spin()  # as the command lines do, before torch loads
    import time

    from hydra import compose, initialize_config_dir

    from dqnfast.cli import CONF_DIR
    from dqnfast.cli.train import to_config
    from dqnfast.training import dqn as dqn_part
    from dqnfast.training import loop, train

    sums = {k: 0.0 for k in (*PARTS, "step")}
    counts = {"steps": 0, "updates": 0}
    learning = [False]  # timing starts with the step after the one with the first update (its warm-up)
    seen = [False]  # an update has run

    def timed(name, fn):
        def call(*a, **kw):
            counted, t0 = learning[0], time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                if counted:
                    sums[name] += time.perf_counter() - t0

        return call

    class EnvProxy:
        def __init__(self, env):
            self._env = env
            self.recv = timed("recv", env.recv)
            self.send = timed("send", env.send)

        def __getattr__(self, name):
            return getattr(self._env, name)

    built = dqn_part.build

    def build(*a, **kw):
        run = built(*a, **kw)
        run.env = EnvProxy(run.env)
        run.ring.add = timed("add", run.ring.add)
        run.actor.act = timed("act", run.actor.act)
        run.batches.next = timed("sample", run.batches.next)
        update = run.learner.update

        def counted_update(batch):
            counts["updates"] += learning[0]
            seen[0] = True
            return update(batch)

        run.learner.update = timed("update", counted_update)
        return run

    step = loop.step

    def timed_step(run, st, loggers, stop):
        t0 = time.perf_counter()
        was = learning[0]
        out = step(run, st, loggers, stop)
        if was:
            sums["step"] += time.perf_counter() - t0
            counts["steps"] += 1
        learning[0] = seen[0]
        return out

    dqn_part.build = build
    loop.step = timed_step
    overrides = [
        *budget_overrides(args.game, args.learning_starts, args.steps, low_epsilon=True),
        "logger.wandb=false",
        *([f"torch_threads={args.threads}"] if args.threads else []),
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="loop_profile"):
        cfg = to_config(compose(config_name="config", overrides=overrides))
    import torch

    with tempfile.TemporaryDirectory(prefix="dqnfast_loop_profile_") as tmp:
        train(cfg, Path(tmp) / "run")
    n = max(1, counts["steps"])
    ms = {k: 1000 * v / n for k, v in sums.items()}
    ms["other"] = ms["step"] - sum(ms[k] for k in PARTS)
    return {
        "threads": torch.get_num_threads(),
        "num_envs": cfg.envs.num_envs,
        "loop_steps": counts["steps"],
        "updates": counts["updates"],
        "ms_per_step": ms,
        "ms_per_update": 1000 * sums["update"] / max(1, counts["updates"]),
        "agent_steps_per_s": cfg.envs.num_envs * n / sums["step"] if sums["step"] else None,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--game", default="Breakout")
    p.add_argument("--steps", type=int, default=3000, help="agent steps of learning timed per setting")
    p.add_argument("--learning-starts", type=int, default=2000)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads per setting (0: the CLI's)")
    p.add_argument("--out", type=Path, default=_HERE / "results" / "loop_profile.json")
    p.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker is not None:
        args.threads = args._worker
        print(json.dumps(worker(args)))
        return 0
    from common import machine_info

    rows = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--game", args.game, "--steps", str(args.steps)]
        cmd += ["--learning-starts", str(args.learning_starts), "--_worker", str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"threads {threads}: failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        ms = row["ms_per_step"]
        parts = "  ".join(f"{k} {ms[k]:.1f} ({ms[k] / ms['step']:.0%})" for k in (*PARTS, "other"))
        print(
            f"torch {row['threads']} thread(s), {row['num_envs']} envs: {ms['step']:.1f} ms per loop step "
            f"({row['agent_steps_per_s']:.1f} agent steps/s; {row['ms_per_update']:.1f} ms per update): {parts}",
            flush=True,
        )
    doc = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "game": args.game,
        "steps": args.steps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
