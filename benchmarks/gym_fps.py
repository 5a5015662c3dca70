"""Agent steps/s of CartPole-v1 through Gymnasium's vector envs (sync, async) against envpool's, one run.

Each backend is driven through dqnfast's batched interface (``dqnfast.envs.make_env``: what the
training loop calls) with random actions, the same number of envs, for the same wall time;
the figures are ratios to envpool's, measured side by side. Prints ``NAME = value unit`` lines
and saves JSON (``--out``).

    python benchmarks/gym_fps.py --num-envs 8 --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_HERE.parent))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import machine_info  # noqa: E402

from dqnfast.config import EnvsConfig, ProtocolConfig  # noqa: E402
from dqnfast.envs import make_env  # noqa: E402


def steps_per_second(game: str, n: int, seconds: float, vectorization: str = "sync") -> float:
    env, spec = make_env(game, "pixels", EnvsConfig(num_envs=n, vectorization=vectorization), ProtocolConfig(), seed=0)
    rng = np.random.default_rng(0)
    env.async_reset()
    steps, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            _, _, _, _, info = env.recv()
            ids = info["env_id"]
            env.send(rng.integers(0, spec.num_actions, len(ids)).astype(np.int32), ids)
            steps += len(ids)
        env.recv()
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="per backend and round")
    p.add_argument("--rounds", type=int, default=3, help="backends in turn (A B C A B C ...); medians reported")
    p.add_argument("--out", type=Path, default=_HERE / "results" / "gym_fps.json")
    a = p.parse_args()
    backends = {
        "envpool": ("CartPole", "sync"),
        "gym_sync": ("gym:CartPole-v1", "sync"),
        "gym_async": ("gym:CartPole-v1", "async"),
    }
    # in turn, so that a change in the machine's load falls on every backend alike
    runs = {name: [] for name in backends}
    for _ in range(a.rounds):
        for name, (game, mode) in backends.items():
            runs[name].append(steps_per_second(game, a.num_envs, a.seconds, mode))
    rows = {name: float(np.median(v)) for name, v in runs.items()}
    machine = machine_info()  # the CPU model and flags, commit, date and load the figures were taken at
    out = {"machine": machine, "num_envs": a.num_envs, "seconds": a.seconds, "steps_per_s": rows, "rounds": runs}
    for name, sps in rows.items():
        print(f"cartpole_{name} = {sps:.0f} agent steps/s")
    for name in ("gym_sync", "gym_async"):
        out[f"{name}_vs_envpool"] = rows[name] / rows["envpool"]
        print(f"cartpole_{name}_vs_envpool = {out[f'{name}_vs_envpool']:.3f} ratio")
    print(
        f"cpu = {machine['cpu_model']} ({', '.join(machine['cpu'].get('flags_of_note', []))}), load {machine['loadavg']}"
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
