"""Agent steps/s of CartPole-v1 through Gymnasium's vector envs (sync, async) against envpool's, one run.

Each backend is driven through dqnfast's batched interface (``dqnfast.envs.make_env``: what the
training loop calls) with random actions, the same number of envs, for the same wall time;
the figures are ratios to envpool's, measured side by side. Prints ``NAME = value unit`` lines
and saves JSON (``--out``).

    python benchmarks/gym_fps.py --num-envs 8 --seconds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from dqnfast.config import EnvsConfig, ProtocolConfig
from dqnfast.envs import make_env


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gym_fps.json"))
    a = p.parse_args()
    rows = {
        "envpool": steps_per_second("CartPole", a.num_envs, a.seconds),
        "gym_sync": steps_per_second("gym:CartPole-v1", a.num_envs, a.seconds, "sync"),
        "gym_async": steps_per_second("gym:CartPole-v1", a.num_envs, a.seconds, "async"),
    }
    out = {"cpu": cpu_model(), "num_envs": a.num_envs, "seconds": a.seconds, "steps_per_s": rows}
    for name, sps in rows.items():
        print(f"cartpole_{name} = {sps:.0f} agent steps/s")
    for name in ("gym_sync", "gym_async"):
        out[f"{name}_vs_envpool"] = rows[name] / rows["envpool"]
        print(f"cartpole_{name}_vs_envpool = {out[f'{name}_vs_envpool']:.3f} ratio")
    print(f"cpu = {out['cpu']}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
