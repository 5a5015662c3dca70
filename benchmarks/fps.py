"""Frames per second of every stage of dqnfast, each against its bound, in one run.

    stage    figure                                        bound / compared with
    env      envpool steps/s (x4 = frames/s), sync and    -- the emulation ceiling
             async, over num_envs and threads
    actor    env + batched greedy inference (Nature CNN    env, same num_envs/batch/threads
             on the device, dqnfast.agent.actor.Actor) +
             ReplayRing.add(obs[:, -1]), no learning
    replay   ReplayRing.sample(B) samples/s (run by       memcpy of the same bytes (numpy,
             benchmarks/replay.py, sb3/reference skipped)  1 thread), replay.py's method
    learner  updates/s of dqnfast.agent.dqn.update_step,    eager fp32 at the same B
             Nature CNN, uint8 batch on the device, at
             B=32 and 256: eager / torch.compile /
             compile+CUDA graphs (reduce-overhead, CUDA
             only), fp32 / bf16 autocast
    e2e      agent steps/s of the real CLI               min(env ceiling, learner updates/s
             (python -m dqnfast.train) after learning      x B / replay_ratio): at the Nature
             starts: the Nature ratio (8 envs, B=32, one   ratio 4 x updates/s at B=32
             update per 4 steps) and a high-throughput
             setting (64 envs async, B=256)
    peer     a plain single-env Python DQN loop           dqnfast's e2e SPS as a multiple of it
             (benchmarks/peer_dqn.py: gymnasium wrappers
             over ale-py, deque replay, eager torch)

Each stage runs in its own subprocess (its threads, memory and CUDA context end with it; a
hung stage is stopped after its timeout and the others still report). A stage whose bound was
not asked for measures the bound's configurations too (``--stage e2e`` also runs the env and
learner configurations it is compared with), so every ratio is measured side by side.

    python benchmarks/fps.py                          # everything (sized for < 8 minutes on the GPU
                                                      # machine; 7.8 minutes on 2 CPU cores)
    python benchmarks/fps.py --quick                  # smoke test: a few seconds per stage
    python benchmarks/fps.py --stage env,actor --num-envs 16,256 --threads 8,16
    python benchmarks/fps.py --stage learner --batch-sizes 32 --variants eager-fp32,graphs-fp32

Prints one ``NAME = value unit`` line per figure, a table of every stage's figure, bound and
ratio, and the speed targets; saves JSON (default benchmarks/results/fps.json) with the
machine's description. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_REPO) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_REPO))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from dqnfast.openmp import shorten_spin  # noqa: E402

shorten_spin()  # as dqnfast's command lines do, before any stage loads torch (the stages inherit it)

from common import (  # noqa: E402
    Metrics,
    cpu_count,
    cpu_snapshot,
    default_learner,
    machine_info,
    print_table,
    save_json,
    time_rate,
)

STAGES = ("env", "actor", "replay", "learner", "e2e", "peer")
VARIANTS = ("eager-fp32", "eager-bf16", "compile-fp32", "compile-bf16", "graphs-fp32", "graphs-bf16")
FRAME_SKIP = 4
# Reference figures from one H100 machine with 16 cores: for orientation only.
REFERENCE = {
    "envpool Pong-v5 random actions, 16 envs sync": "12.7k steps/s",
    "envpool Pong-v5 random actions, 256 envs sync": "21.3k steps/s",
    "envpool Pong-v5 random actions, 256 envs batch 128 async": "23.1k steps/s",
    "CleanRL dqn_atari.py after learning starts": "~330 steps/s",
    "Nature-CNN double-DQN update, eager": "3.4 ms (B=32), 4.5 ms (B=256)",
    "torch.compile(mode='reduce-overhead')": "1.25 ms (B=32), 1.77 ms (B=256)",
}
CLEANRL_SPS = 330.0
# Speed targets, for a CUDA machine.
TARGETS = {
    "actor_vs_env": 0.8,
    "graphs_vs_eager_B32": 3.0,
    "e2e_vs_bound": 0.8,
    "e2e_vs_cleanrl": 15.0,
    "e2e_vs_peer": 20.0,
}
E2E_SETTINGS = {  # name -> Hydra overrides on top of the defaults (the Nature recipe)
    "nature": [],
    "fast": ["preset=fast"],
}
PEER_PACKAGES = ("ale-py", "opencv-python-headless")


# ============================================================================ options
def _ints(s: str) -> list[int]:
    return [int(x) for x in s.replace(",", " ").split()]


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.replace(" ", ",").split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stage", default="all", help=f"comma list of {', '.join(STAGES)}, or all (default)")
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes, a few seconds per stage: a smoke test, not a measurement"
    )
    p.add_argument("--game", default="Pong", help="envpool Atari game (default Pong)")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    p.add_argument(
        "--num-envs",
        type=_ints,
        default=None,
        help="env stage num_envs, each sync (batch = N) and async (batch = N/2) (default 8,16,64,256; --quick 8)",
    )
    p.add_argument(
        "--threads",
        type=_ints,
        default=None,
        help="envpool threads for the env stage (default cores/2,cores; --quick cores); "
        "the actor stage uses the largest",
    )
    p.add_argument(
        "--actor-num-envs", type=_ints, default=None, help="actor stage num_envs (default: --num-envs; --quick 8)"
    )
    p.add_argument("--no-async", action="store_true", help="env and actor stages: synchronous rows only")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="learner batch sizes (default 32,256)")
    p.add_argument(
        "--variants",
        type=_names,
        default=None,
        help=f"learner variants, from {', '.join(VARIANTS)} (default all but compile-bf16; graphs = "
        "torch.compile(mode='reduce-overhead'), CUDA only; --quick: eager only)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch CPU threads in the actor, learner and peer stages (default: as dqnfast.train picks "
        "them on CPU, torch's default on CUDA)",
    )
    p.add_argument(
        "--replay-capacity",
        type=int,
        default=None,
        help="transitions in the replay stage's ring (default 200,000; --quick replay.py's)",
    )
    p.add_argument(
        "--e2e",
        type=_names,
        default=None,
        help=f"e2e settings: {', '.join(E2E_SETTINGS)} (default both; --quick nature)",
    )
    p.add_argument(
        "--e2e-fast",
        default=None,
        help=f"Hydra overrides of the high-throughput setting (default: '{' '.join(E2E_SETTINGS['fast'])}')",
    )
    p.add_argument(
        "--e2e-seconds",
        type=float,
        default=None,
        help="measured seconds of each e2e run after warm-up (default 20; --quick 2)",
    )
    p.add_argument(
        "--e2e-learning-starts",
        type=int,
        default=None,
        help="agent steps of random play before learning (default 10000; --quick 500)",
    )
    p.add_argument(
        "--e2e-capacity",
        type=int,
        default=None,
        help="replay.capacity of the e2e runs (default 200,000: 1.4 GB, far above the caches)",
    )
    p.add_argument("--peer-seconds", type=float, default=None, help="peer's timed seconds (default 20; --quick 1.5)")
    p.add_argument("--min-time", type=float, default=None, help="seconds per timing repetition (default 0.5)")
    p.add_argument("--reps", type=int, default=None, help="timing repetitions, median reported (default 3)")
    p.add_argument(
        "--stage-timeout",
        type=float,
        default=None,
        help="seconds before a stage is stopped (default per stage, see STAGE_TIMEOUT)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the e2e runs' directories (printed)")
    p.add_argument("--out", default=str(_HERE / "results" / "fps.json"), help="JSON output path")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_cfg", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._worker:
        return a
    q = a.quick
    cores = cpu_count()
    stages = STAGES if a.stage.strip() in ("all", "") else tuple(_names(a.stage))
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)} or all")
    a.stages = [s for s in STAGES if s in stages]
    a.num_envs = a.num_envs or ([8] if q else [8, 16, 64, 256])
    a.threads = sorted(set(a.threads or ([cores] if q else [max(1, cores // 2), cores])))
    a.actor_num_envs = a.actor_num_envs or ([8] if q else list(a.num_envs))
    a.batch_sizes = a.batch_sizes or ([32] if q else [32, 256])
    bad = [v for v in (a.variants or []) if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    a.e2e = a.e2e or (["nature"] if q else list(E2E_SETTINGS))
    bad = [s for s in a.e2e if s not in E2E_SETTINGS]
    if bad:
        p.error(f"unknown e2e setting(s) {', '.join(bad)}; choose from {', '.join(E2E_SETTINGS)}")
    a.e2e_fast = a.e2e_fast.split() if a.e2e_fast is not None else list(E2E_SETTINGS["fast"])
    a.e2e_seconds = a.e2e_seconds if a.e2e_seconds is not None else (2.0 if q else 20.0)
    a.e2e_learning_starts = a.e2e_learning_starts if a.e2e_learning_starts is not None else (500 if q else 10000)
    a.e2e_capacity = a.e2e_capacity or (20_000 if q else 200_000)
    a.peer_seconds = a.peer_seconds if a.peer_seconds is not None else (1.5 if q else 20.0)
    a.min_time = a.min_time if a.min_time is not None else (0.1 if q else 0.5)
    a.reps = a.reps or (1 if q else 3)
    a.max_retries = 0 if q else a.reps  # repetitions disturbed by other processes are repeated, within reason
    a.cores = cores
    return a


# Seconds a stage may take before it is stopped (a full run on a CUDA machine fits in them).
STAGE_TIMEOUT = {"env": 240, "actor": 180, "replay": 240, "learner": 480, "e2e": 300, "peer": 180}
STAGE_TIMEOUT_QUICK = {"env": 60, "actor": 60, "replay": 60, "learner": 90, "e2e": 90, "peer": 60}


# ============================================================================ workers
# Each stage runs as ``fps.py --_worker STAGE --_cfg FILE`` in a fresh process and writes its
# rows to cfg["out"] after every row, so a stage stopped by its timeout keeps what it measured.
class Sink:
    """A worker's results file: rows, notes and an error, rewritten atomically after each change."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.doc: dict = {"rows": [], "notes": [], "error": None}
        self.flush()

    def add(self, row: dict) -> None:
        self.doc["rows"].append(row)
        self.flush()

    def note(self, msg: str) -> None:
        print(f"note: {msg}", flush=True)
        self.doc["notes"].append(msg)
        self.flush()

    def fail(self, msg: str) -> None:
        self.doc["error"] = msg
        self.flush()

    def flush(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, default=_plain))
        os.replace(tmp, self.path)


def _plain(o):
    try:
        return o.tolist()
    except AttributeError:
        return str(o)


def _timing(cfg: dict, fn, work: float, warmup: int = 3) -> dict:
    t = time_rate(fn, work, min_time=cfg["min_time"], reps=cfg["reps"], warmup=warmup, max_retries=cfg["max_retries"])
    return {
        "rate": t["rate"],
        "rate_min": t["rate_min"],
        "rate_max": t["rate_max"],
        "rates": t["rates"],
        "sec_per_call": t["sec_per_call"],
        "foreign_cores": t["foreign_cores"],
        "clean": t["clean"],
        "reps_discarded": t["reps_discarded"],
    }


def _torch_setup(cfg: dict):
    import torch

    device = torch.device(cfg["device"])
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg["torch_threads"]))
    return torch, device  # cuDNN and TF32 settings left at torch's defaults, as dqnfast.train leaves them


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm(fn, seconds: float, min_calls: int = 3) -> None:
    t0 = time.perf_counter()
    n = 0
    while n < min_calls or time.perf_counter() - t0 < seconds:
        fn()
        n += 1


def _make_env(cfg: dict, n: int, b: int, t: int):
    """The training protocol's env (dqnfast.envs.make_env), as dqnfast.train builds it."""
    from dqnfast.config import EnvsConfig, ProtocolConfig
    from dqnfast.envs import make_env

    return make_env(
        cfg["game"], "pixels", EnvsConfig(num_envs=n, batch_size=b, num_threads=t), ProtocolConfig(), seed=cfg["seed"]
    )


def worker_env(cfg: dict, sink: Sink) -> None:
    """envpool alone: recv -> send random actions, keyed by env_id (sync: batch = num_envs)."""
    import numpy as np

    rng = np.random.default_rng(cfg["seed"])
    for n, b, t in cfg["configs"]:
        env, spec = _make_env(cfg, n, b, t)
        acts = rng.integers(0, spec.num_actions, (64, n), dtype=np.int32)
        k = [0]

        def step(env=env, acts=acts, k=k):
            info = env.recv()[4]
            ids = info["env_id"]
            env.send(acts[k[0] & 63][ids], ids)
            k[0] += 1

        env.async_reset()
        _warm(step, cfg["warm_s"])
        tm = _timing(cfg, step, b)
        env.recv()  # the in-flight step, before close
        env.close()
        row = {
            "stage": "env",
            "mode": "sync" if b == n else "async",
            "num_envs": n,
            "batch": b,
            "threads": t,
            "steps_per_s": tm["rate"],
            "frames_per_s": tm["rate"] * spec.frame_skip,
            **tm,
        }
        print(
            f"env    {row['mode']:5s} N={n:<4d} batch={b:<4d} threads={t:<3d} {tm['rate']:>10,.0f} steps/s", flush=True
        )
        sink.add(row)


def worker_actor(cfg: dict, sink: Sink) -> None:
    """recv -> ReplayRing.add(obs[:, -1]) -> Actor.act (greedy, one batched forward) -> send."""
    import numpy as np

    torch, device = _torch_setup(cfg)
    from dqnfast.agent.actor import Actor
    from dqnfast.agent.networks import make_network, spec_for
    from dqnfast.config.resolve import resolve_compile
    from dqnfast.replay import ReplayRing

    mode = resolve_compile("auto", device)  # as dqnfast.train: a CUDA graph per batch shape on CUDA, eager on CPU
    for n, b, t in cfg["configs"]:
        env, spec = _make_env(cfg, n, b, t)
        net = make_network(spec_for("nature", "pixels", spec.obs_shape, "uint8", spec.num_actions)).to(device)
        if mode is not None:
            torch._dynamo.reset()
        actor = Actor(net, spec.num_actions, device, seed=cfg["seed"], compile_mode=mode)
        cap = max(cfg["actor_capacity"] // n * n, 64 * n)  # whole per-env segments
        ring = ReplayRing(
            cap, n, spec.frame_shape, spec.frame_dtype, stack=spec.stack, n_step=1, gamma=0.99, seed=cfg["seed"]
        )
        last_action = np.zeros(n, np.int64)

        def step(env=env, ring=ring, actor=actor, last_action=last_action):
            obs, reward, terminated, truncated, info = env.recv()
            ids = info["env_id"]
            ring.add(ids, obs[:, -1], last_action[ids], reward, terminated, truncated, info["elapsed_step"] == 0)
            actions = actor.act(obs, 0.0)
            env.send(actions, ids)
            last_action[ids] = actions

        env.async_reset()
        _warm(step, cfg["warm_s"], min_calls=5)
        tm = _timing(cfg, step, b)
        env.recv()
        env.close()
        row = {
            "stage": "actor",
            "mode": "sync" if b == n else "async",
            "num_envs": n,
            "batch": b,
            "threads": t,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "ring_capacity": ring.capacity,
            "actor_compile": actor.compile_mode,
            "steps_per_s": tm["rate"],
            "frames_per_s": tm["rate"] * spec.frame_skip,
            **tm,
        }
        print(
            f"actor  {row['mode']:5s} N={n:<4d} batch={b:<4d} threads={t:<3d} {tm['rate']:>10,.0f} steps/s ({device})",
            flush=True,
        )
        sink.add(row)
        del ring


def worker_replay(cfg: dict, sink: Sink) -> None:
    """benchmarks/replay.py restricted to dqnfast and memcpy (its method, its numbers); else inline."""
    script = _HERE / "replay.py"
    if script.exists():
        out = Path(cfg["out"]).with_name("replay_stage.json")
        cmd = [
            sys.executable,
            str(script),
            "--skip",
            "sb3,sb3-optmem,sb3-optmem-dm,reference",
            "--threads",
            ",".join(map(str, cfg["threads"])),
            "--batch-sizes",
            ",".join(map(str, cfg["batch_sizes"])),
            "--out",
            str(out),
            "--seed",
            str(cfg["seed"]),
        ]
        if cfg["quick"]:
            cmd.append("--quick")
        else:
            cmd += ["--capacity", str(cfg["capacity"]), "--min-time", str(cfg["min_time"]), "--reps", str(cfg["reps"])]
        print("replay: " + " ".join(cmd[1:]), flush=True)
        r = subprocess.run(cmd, cwd=_REPO, check=False)
        if r.returncode == 0 and out.exists():
            doc = json.loads(out.read_text())
            for row in doc["results"]:
                if row["impl"] in ("dqnfast", "memcpy-numpy", "memcpy-torch"):
                    sink.add(
                        {
                            "stage": "replay",
                            "method": "benchmarks/replay.py",
                            **{
                                k: row.get(k)
                                for k in (
                                    "impl",
                                    "batch_size",
                                    "threads",
                                    "capacity",
                                    "samples_per_s",
                                    "samples_per_s_min",
                                    "samples_per_s_max",
                                    "ms_per_batch",
                                    "obs_gb_per_s",
                                    "foreign_cores",
                                    "clean",
                                    "page_faults_per_call",
                                )
                            },
                        }
                    )
            for n in doc.get("notes", []):
                sink.note(f"replay.py: {n}")
            out.unlink(missing_ok=True)
            return
        sink.note(f"benchmarks/replay.py failed (exit status {r.returncode}); no replay figures")
    else:
        sink.note("benchmarks/replay.py not found; no replay figures")


def worker_learner(cfg: dict, sink: Sink) -> None:
    """dqnfast.agent.dqn.Learner.update (double DQN, Huber, grad-norm clip 10, Adam as dqnfast.train builds it).

    Variants map to ``algo.compile`` / ``algo.amp``: eager = false, compile = default,
    graphs = reduce-overhead (what ``auto`` runs on CUDA); fp32 = none, bf16 = bf16.
    """
    import types

    torch, device = _torch_setup(cfg)

    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - private API moved
        counters = None
    num_actions = cfg["num_actions"]
    modes = {"eager": None, "compile": "default", "graphs": "reduce-overhead"}
    # k updates per timed call, then a device sync: the rate is of finished updates, not launches
    k = 10 if device.type == "cuda" else 1
    for b, variant in cfg["configs"]:
        kind, dtype = variant.split("-")
        torch.manual_seed(cfg["seed"])
        mode = modes[kind]
        learner = default_learner(num_actions, device, mode, torch.bfloat16 if dtype == "bf16" else None)
        g = torch.Generator(device="cpu").manual_seed(cfg["seed"])
        batch = types.SimpleNamespace(
            obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g).to(device),
            next_obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g).to(device),
            action=torch.randint(0, num_actions, (b,), generator=g).to(device),
            reward=torch.randint(-1, 2, (b,), generator=g).float().to(device),
            discount=torch.full((b,), 0.99, device=device),
        )
        skips0 = _cudagraph_skips(counters)
        out: dict = {}

        def call(learner=learner, batch=batch, out=out):
            out["m"] = learner.update(batch)

        def call_k(call=call):
            for _ in range(k):
                call()
            _sync(torch, device)

        try:
            t0 = time.perf_counter()
            call()
            _sync(torch, device)
            first_s = time.perf_counter() - t0
            if learner.compile_mode != mode:
                raise RuntimeError("compiling failed; the learner fell back to eager (see the log)")
            _warm(call_k, cfg["warm_s"], min_calls=3)  # reduce-overhead records its graphs on the first calls
            tm = _timing(cfg, call_k, k, warmup=1)
            loss = float(out["m"]["loss"].float().item())
        except Exception as e:  # noqa: BLE001 - one variant failing must not stop the others
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            sink.note(f"learner B={b} {variant} failed: {msg}")
            sink.add({"stage": "learner", "batch_size": b, "variant": variant, "error": msg})
            continue
        skips = _cudagraph_skips(counters) - skips0 if counters is not None else None
        row = {
            "stage": "learner",
            "batch_size": b,
            "variant": variant,
            "kind": kind,
            "dtype": dtype,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "compile_mode": mode,
            "graphed": learner.graphed,
            "updates_per_s": tm["rate"],
            "ms_per_update": 1e3 / tm["rate"],
            "first_call_s": first_s,
            "cudagraph_skips": skips,
            "loss_finite": math.isfinite(loss),
            **tm,
        }
        if kind != "eager" and counters is not None:
            row["graph_breaks"] = int(sum(counters["graph_break"].values()))
            row["unique_graphs"] = int(counters["stats"].get("unique_graphs", 0))
        if kind == "graphs" and skips:
            row["note"] = "inductor skipped CUDA graphs for some graphs (see the log): not fully graphed"
        print(
            f"learner B={b:<4d} {variant:13s} {tm['rate']:>9,.1f} updates/s  {1e3 / tm['rate']:7.2f} ms"
            f"  (first call {first_s:.1f} s)",
            flush=True,
        )
        sink.add(row)
        del learner, call, call_k
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _cudagraph_skips(counters) -> int:
    if counters is None:
        return 0
    try:
        return int(sum(counters["inductor"].get(k, 0) for k in ("cudagraph_skips",)))
    except Exception:  # noqa: BLE001
        return 0


def worker_e2e(cfg: dict, sink: Sink) -> None:
    """``python -m dqnfast.train`` as a user runs it; SPS from metrics.csv after learning starts and warm-up.

    The run is open-ended (huge total_steps); metrics.csv is read while it grows, and once
    ``seconds`` have been measured after the warm-up rows, the run gets SIGINT (it writes a
    checkpoint and exits 130). SPS = agent steps / seconds between the last warm-up row and the
    last row (metrics.csv's env_steps and time columns).
    """
    for s in cfg["settings"]:
        try:
            sink.add(_run_e2e(cfg, s))
        except Exception as e:  # noqa: BLE001 - report, go on with the next setting
            msg = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
            sink.note(f"e2e {s['name']} failed: {msg}")
            sink.add({"stage": "e2e", "setting": s["name"], "error": msg})


_HZ = os.sysconf("SC_CLK_TCK")


def _proc_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]  # a row being written
    rows = []
    for r in csv.DictReader(lines):
        try:
            rows.append({k: float(v) for k, v in r.items() if k in ("env_steps", "time", "updates", "sps")})
        except (TypeError, ValueError):
            continue
    return rows


def _run_e2e(cfg: dict, s: dict) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"dqnfast-fps-{s['name']}-"))
    ls = cfg["learning_starts"]
    cmd = [
        sys.executable,
        "-m",
        "dqnfast.train",
        f"game={cfg['game']}",
        f"device={cfg['device']}",
        f"algo.total_steps={ls + 1_000_000_000}",
        f"algo.learning_starts={ls}",
        "logger.progress=false",
        f"logger.log_every={s['log_every']}",
        "logger.checkpoint_every=0",
        "envs.eval.episodes=0",
        f"replay.capacity={cfg['capacity']}",
        f"seed={cfg['seed'] + 1}",
        *s["overrides"],
        f"hydra.run.dir={run_dir}",
    ]
    print(f"e2e {s['name']}: " + " ".join(cmd[2:]), flush=True)
    log_path = run_dir / "stdout.log"
    metrics = run_dir / "metrics.csv"
    t_start = time.perf_counter()
    budget = cfg["budget_s"]
    warm_rows, min_rows = cfg["warmup_rows"], cfg["min_rows"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=_REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        stopped_by = "window"
        snap0 = snap1 = None  # CPU accounting over the measured window: (machine, trainer)
        try:
            while True:
                time.sleep(0.25)
                if proc.poll() is not None:
                    stopped_by = f"exit {proc.returncode}"
                    break
                learn = [r for r in _read_rows(metrics) if r["updates"] > 0]
                if snap0 is None and len(learn) >= warm_rows:
                    snap0 = (cpu_snapshot(), _proc_ticks(proc.pid))
                if (
                    len(learn) >= warm_rows + min_rows
                    and learn[-1]["time"] - learn[warm_rows - 1]["time"] >= cfg["seconds"]
                ):
                    break
                if time.perf_counter() - t_start > budget:
                    stopped_by = "budget"
                    break
            snap1 = (cpu_snapshot(), _proc_ticks(proc.pid))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # the trainer checkpoints and exits 130
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    wall = time.perf_counter() - t_start
    rows = _read_rows(metrics)
    random_rows = [r for r in rows if r["updates"] == 0][1:]  # the first row holds the env start-up
    learn = [r for r in rows if r["updates"] > 0]
    row = {
        "stage": "e2e",
        "setting": s["name"],
        "overrides": s["overrides"],
        "num_envs": s["num_envs"],
        "env_batch": s["env_batch"],
        "batch_size": s["batch_size"],
        "replay_ratio": s["replay_ratio"],
        "learning_starts": ls,
        "log_every": s["log_every"],
        "device": cfg["device"],
        "rows": len(rows),
        "learning_rows": len(learn),
        "stopped_by": stopped_by,
        "wall_s": wall,
        "sps_rows": [round(r["sps"], 1) for r in learn],
    }
    if snap0 and snap1 and snap0[0] and snap1[0] and snap0[1] is not None and snap1[1] is not None:
        dt = snap1[0][0] - snap0[0][0]
        if dt > 0:
            trainer = (snap1[1] - snap0[1]) / _HZ / dt
            row["trainer_cores"] = trainer  # envpool threads + torch + Python, cores' worth
            row["foreign_cores"] = max(
                0.0, (snap1[0][1] - snap0[0][1]) / _HZ / dt - trainer - (snap1[0][2] - snap0[0][2]) / _HZ / dt
            )
    if random_rows:
        a, z = rows[0], random_rows[-1]
        row["random_phase_sps"] = (z["env_steps"] - a["env_steps"]) / max(z["time"] - a["time"], 1e-9)
    warm = warm_rows
    if len(learn) < warm + 1 and len(learn) >= 2:
        warm = 1
        row["note"] = "too few rows for the warm-up: only the first learning row was dropped"
    if len(learn) < warm + 1:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:] if log_path.exists() else []
        raise RuntimeError(
            f"{len(learn)} metrics rows after learning started ({stopped_by}; wall {wall:.0f} s); "
            f"log tail: {' | '.join(tail)}"
        )
    a, z = learn[warm - 1], learn[-1]
    row.update(
        sps=(z["env_steps"] - a["env_steps"]) / (z["time"] - a["time"]),
        measured_s=z["time"] - a["time"],
        measured_steps=z["env_steps"] - a["env_steps"],
        measured_updates=z["updates"] - a["updates"],
        warmup_rows=warm,
    )
    row["updates_per_step"] = row["measured_updates"] / max(row["measured_steps"], 1)
    print(
        f"e2e {s['name']}: {row['sps']:,.1f} agent steps/s over {row['measured_s']:.1f} s "
        f"({row['measured_updates']:.0f} updates)",
        flush=True,
    )
    if cfg["keep"]:
        row["run_dir"] = str(run_dir)
    else:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    return row


def worker_peer(cfg: dict, sink: Sink) -> None:
    """benchmarks/peer_dqn.py in its own process; reads its JSON."""
    out = Path(cfg["out"]).with_name("peer_stage.json")
    cmd = [
        sys.executable,
        str(_HERE / "peer_dqn.py"),
        "--game",
        cfg["game"],
        "--device",
        cfg["device"],
        "--seconds",
        str(cfg["seconds"]),
        "--learning-starts",
        str(cfg["learning_starts"]),
        "--warmup-steps",
        str(cfg["warmup_steps"]),
        "--seed",
        str(cfg["seed"]),
        "--json",
        str(out),
    ]
    if cfg.get("torch_threads"):
        cmd += ["--torch-threads", str(cfg["torch_threads"])]
    print("peer: " + " ".join(cmd[1:]), flush=True)
    r = subprocess.run(cmd, cwd=_REPO, check=False)
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"peer_dqn.py exit status {r.returncode}")
    doc = json.loads(out.read_text())
    out.unlink(missing_ok=True)
    sink.add(
        {
            "stage": "peer",
            **{
                k: doc[k]
                for k in (
                    "sps",
                    "timed_steps",
                    "timed_updates",
                    "timed_seconds",
                    "fill_sps",
                    "device",
                    "torch_threads",
                    "env",
                    "versions",
                    "resize",
                )
            },
        }
    )


WORKERS = {
    "env": worker_env,
    "actor": worker_actor,
    "replay": worker_replay,
    "learner": worker_learner,
    "e2e": worker_e2e,
    "peer": worker_peer,
}


def run_worker(stage: str, cfg_path: str) -> int:
    cfg = json.loads(Path(cfg_path).read_text())
    sink = Sink(cfg["out"])
    try:
        WORKERS[stage](cfg, sink)
    except BaseException as e:  # noqa: BLE001 - recorded for the parent, then re-raised as an exit status
        sink.fail(f"{type(e).__name__}: {' '.join(str(e).split())[:400]}")
        traceback.print_exc()
        return 1
    return 0


# ============================================================================ the run
def _env_cfgs(num_envs, threads, with_async: bool) -> list[tuple[int, int, int]]:
    out = []
    for n in num_envs:
        for b in [n] + ([n // 2] if with_async and n >= 2 else []):
            for t in threads:
                c = (n, b, min(t, n))
                if c not in out:
                    out.append(c)
    return out


def _composed(overrides: list[str]):
    """The Config that ``python -m dqnfast.train <overrides>`` runs with (Hydra's own composition)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dqnfast.cli.train import CONF_DIR, to_config

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=[o for o in overrides if not o.startswith("hydra.")]))


def _e2e_settings(args) -> list[dict]:
    out = []
    for name in args.e2e:
        ov = list(args.e2e_fast if name == "fast" else E2E_SETTINGS[name])
        if args.quick and not any(o.startswith("algo.compile=") for o in ov):
            ov.append("algo.compile=false")  # a smoke test: no 30 s compile on CUDA
        c = _composed(ov)
        n = c.envs.num_envs
        b_env = c.envs.batch_size or n
        t = c.envs.num_threads or args.cores
        out.append(
            {
                "name": name,
                "overrides": ov,
                "num_envs": n,
                "env_batch": min(b_env, n),
                "env_threads": min(t, n),
                "batch_size": c.algo.batch_size,
                "replay_ratio": float(c.algo.replay_ratio),
                "compile": c.algo.compile,
                "amp": c.algo.amp,
            }
        )
    return out


def _train_variant(compile_mode: str, device: str, amp: str = "none") -> str:
    """The learner variant dqnfast.train runs for algo.compile / algo.amp (auto: graphs on CUDA, eager on CPU)."""
    from dqnfast.config.resolve import resolve_compile, uses_cudagraphs

    mode = resolve_compile(compile_mode, device)
    if mode is None:
        kind = "eager"
    else:
        kind = "graphs" if uses_cudagraphs(mode) and device.startswith("cuda") else "compile"
    return f"{kind}-{'bf16' if str(amp).lower() == 'bf16' else 'fp32'}"


def plan(args, device: str) -> dict:
    """Every stage's configurations, with the bound configurations the asked-for stages need."""
    cuda = device.startswith("cuda")
    stages = list(args.stages)
    p: dict = {s: None for s in STAGES}
    env_cfgs = _env_cfgs(args.num_envs, args.threads, not args.no_async) if "env" in stages else []
    extra_env: list = []
    if "actor" in stages:
        p["actor"] = _env_cfgs(args.actor_num_envs, [max(args.threads)], not args.no_async)
        extra_env += p["actor"]
    settings = _e2e_settings(args) if "e2e" in stages else []
    for s in settings:
        extra_env.append((s["num_envs"], s["env_batch"], s["env_threads"]))
    for c in extra_env:
        if c not in env_cfgs:
            env_cfgs.append(c)
    p["env"] = env_cfgs or None
    if "learner" in stages:
        if args.variants:
            variants = list(args.variants)
        elif args.quick:
            variants = ["eager-fp32", "eager-bf16"]
        else:  # compile-bf16 only when asked: each compiled variant costs a compile per batch size
            variants = [v for v in VARIANTS if v != "compile-bf16"]
        learner = [(b, v) for b in args.batch_sizes for v in variants]
    else:
        learner = []
    for s in settings:
        c = (s["batch_size"], _train_variant(s["compile"], device, s.get("amp", "none")))
        if c not in learner:
            learner.append(c)
        s["learner_variant"] = c[1]
    p["learner_skipped"] = [(b, v) for b, v in learner if v.startswith("graphs") and not cuda]
    learner = [c for c in learner if c not in p["learner_skipped"]]
    # eager-fp32 at each B: the reference every other variant is compared with
    for b in sorted({b for b, _ in learner}):
        if (b, "eager-fp32") not in learner:
            learner.insert(0, (b, "eager-fp32"))
    p["learner"] = learner or None
    p["replay"] = "replay" in stages or None
    p["e2e"] = settings or None
    p["peer"] = "peer" in stages or None
    p["bound_only"] = {s: s not in stages and bool(p[s]) for s in STAGES}
    return p


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._worker:
        return run_worker(args._worker, args._cfg)
    t_start = time.perf_counter()
    import torch

    from dqnfast.envs import resolve_game

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    try:
        task_id, family = resolve_game(args.game)
    except ValueError as e:
        print(f"error: --game: {e}", file=sys.stderr)
        return 2
    if family != "atari":
        print(f"error: --game: {task_id} is not an Atari game", file=sys.stderr)
        return 2
    from dqnfast.config.resolve import thread_counts  # loads torch: after shorten_spin

    torch_threads = args.torch_threads or (0 if cuda else thread_counts(args.cores, cpu=True)[2])
    p = plan(args, device)
    machine = machine_info(
        packages=("torch", "numpy", "envpool", "gymnasium", "ale-py", "opencv-python-headless", "hydra-core")
    )
    if cuda:
        machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    print(
        f"fps benchmark: {machine['cpu_model']}, {machine['cores']} cores, {machine['ram_bytes'] / 1e9:.1f} GB RAM, "
        f"device {device}{' (' + machine['gpu'] + ')' if cuda else ''}, {task_id}, torch "
        f"{torch.__version__}, load average {machine['loadavg'][0]:.2f}"
        f"{', QUICK (smoke test, figures not meaningful)' if args.quick else ''}",
        flush=True,
    )
    print(
        f"stages: {', '.join(args.stages)}" + "".join(f"; {s} (bounds only)" for s in STAGES if p["bound_only"][s]),
        flush=True,
    )

    base = {
        "game": args.game,
        "device": device,
        "seed": args.seed,
        "quick": args.quick,
        "min_time": args.min_time,
        "reps": args.reps,
        "max_retries": args.max_retries,
        "warm_s": 0.2 if args.quick else 1.0,
        "torch_threads": torch_threads,
    }
    results: dict[str, dict] = {}
    metrics = Metrics()
    notes: list[str] = []
    summary_rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="dqnfast-fps-"))
    timeouts = STAGE_TIMEOUT_QUICK if args.quick else STAGE_TIMEOUT
    if p["learner_skipped"]:
        notes.append(
            "learner: CUDA graphs (torch.compile mode='reduce-overhead') need CUDA: skipped on "
            f"{device} ({', '.join(f'B={b} {v}' for b, v in p['learner_skipped'])})"
        )
        print("note:", notes[-1])
    if args.quick and "learner" in args.stages and not args.variants:
        notes.append("learner: --quick measures eager fp32 and bf16 only (torch.compile takes 20+ s a variant)")
        print("note:", notes[-1])

    def save() -> Path:
        config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        config.update(
            device=device,
            task_id=task_id,
            torch_threads=torch_threads,
            plan={k: v for k, v in p.items()},
            wall_seconds=time.perf_counter() - t_start,
        )
        machine["loadavg_end"] = os.getloadavg()
        rows = [r for s in STAGES for r in results.get(s, {}).get("rows", [])]
        return save_json(
            args.out,
            "fps",
            config=config,
            results=rows,
            metrics=metrics,
            machine=machine,
            summary=summary_rows,
            notes=notes,
            reference=REFERENCE,
            targets=TARGETS,
            stages={s: {k: v for k, v in d.items() if k != "rows"} for s, d in results.items()},
        )

    try:
        for stage in STAGES:
            if not p[stage]:
                continue
            cfg = dict(base, out=str(tmp / f"{stage}.json"))
            if stage == "env":
                cfg["configs"] = p["env"]
            elif stage == "actor":
                cfg.update(configs=p["actor"], actor_capacity=20_000 if args.quick else 100_000)
            elif stage == "replay":
                cfg.update(
                    threads=sorted({1, max(args.threads)}),
                    batch_sizes=[32, 256],
                    capacity=args.replay_capacity or (20_000 if args.quick else 200_000),
                )
            elif stage == "learner":
                cfg.update(configs=p["learner"], num_actions=_num_actions(args.game))
            elif stage == "e2e":
                cfg.update(
                    settings=_with_log_every(p["e2e"], results, args, cuda),
                    seconds=args.e2e_seconds,
                    learning_starts=args.e2e_learning_starts,
                    capacity=args.e2e_capacity,
                    keep=args.keep,
                    warmup_rows=1 if args.quick else 2,
                    min_rows=2 if args.quick else 3,
                    budget_s=60 if args.quick else 240,
                )  # per setting; then it is stopped and read
            elif stage == "peer":
                if not _have_peer_packages():
                    notes.append(
                        f"peer: skipped: it needs ale-py and gymnasium (pip install {' '.join(PEER_PACKAGES)})"
                    )
                    print("note:", notes[-1])
                    continue
                cfg.update(
                    seconds=args.peer_seconds,
                    learning_starts=300 if args.quick else 2000,
                    warmup_steps=8 if args.quick else 400,
                )
            timeout = args.stage_timeout or timeouts[stage] * (len(p["e2e"]) if stage == "e2e" else 1)
            results[stage] = run_stage(stage, cfg, tmp, timeout)
            report_stage(stage, results, p, args, metrics, notes, summary_rows, device)
            save()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print_table(
        summary_rows,
        [
            ("stage", "stage"),
            ("setting", "setting"),
            ("figure", "figure"),
            ("unit", "unit"),
            ("bound", "bound / reference"),
            ("bound_what", "bound is"),
            ("ratio", "ratio"),
            ("other_cpu", "other CPU"),
        ],
        title=f"dqnfast fps ({task_id}, {device}{', ' + machine['gpu'] if cuda else ''}; "
        f"ratio = figure / bound; other CPU = cores busy with other processes)",
    )
    print()
    judge_targets(results, p, metrics, notes, cuda)
    for n in notes:
        print("note:", n)
    path = save()
    print(f"saved {path} ({time.perf_counter() - t_start:.0f} s)")
    return 0 if not any(d.get("error") for d in results.values()) else 1


def _num_actions(game: str) -> int:
    import envpool

    from dqnfast.envs import resolve_game

    return int(envpool.make_spec(resolve_game(game)[0]).action_space.n)


def _have_peer_packages() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("ale_py", "gymnasium"))  # cv2: a stand-in


def _with_log_every(settings: list[dict], results: dict, args, cuda: bool) -> list[dict]:
    """metrics.csv rows about every 2 s (0.5 s in --quick), from the bound measured earlier in this run."""
    out = []
    for s in settings:
        s = dict(s)
        bound = _e2e_bound(s, results)[0]
        guess = bound if bound else (2000.0 if cuda else 100.0)
        row_s = 0.5 if args.quick else 2.0
        every = max(s["num_envs"], int(guess * 0.7 * row_s))
        s["log_every"] = int(math.ceil(every / s["num_envs"]) * s["num_envs"])
        out.append(s)
    return out


def run_stage(stage: str, cfg: dict, tmp: Path, timeout: float) -> dict:
    print(f"\n=== {stage} ===", flush=True)
    cfg_path = tmp / f"{stage}.cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", stage, "--_cfg", str(cfg_path)]
    proc = subprocess.Popen(cmd, cwd=_REPO, start_new_session=True)
    error = None
    try:
        rc = proc.wait(timeout=timeout)
        if rc != 0:
            error = f"exit status {rc}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and anything it started (e2e's trainer)
        proc.wait()
        error = f"stopped after its timeout of {timeout:.0f} s (--stage-timeout)"
    out = Path(cfg["out"])
    doc = json.loads(out.read_text()) if out.exists() else {"rows": [], "notes": [], "error": None}
    if doc.get("error"):
        error = f"{doc['error']} ({error})" if error else doc["error"]
    if error:
        print(f"error: stage {stage}: {error}", flush=True)
    return {"rows": doc["rows"], "notes": doc["notes"], "error": error, "seconds": time.perf_counter() - t0}


# ============================================================================ reporting
def _other(r: dict) -> float | None:
    return r.get("foreign_cores")


def _env_row(results, n, b, t):
    for r in results.get("env", {}).get("rows", []):
        if (r["num_envs"], r["batch"], r["threads"]) == (n, b, t):
            return r
    return None


def _learner_row(results, b, variant):
    for r in results.get("learner", {}).get("rows", []):
        if r["batch_size"] == b and r["variant"] == variant and "error" not in r:
            return r
    return None


def _e2e_bound(s: dict, results: dict) -> tuple[float | None, str, dict]:
    """min(env ceiling at the setting's envs, learner updates/s x B / replay_ratio)."""
    env = _env_row(results, s["num_envs"], s["env_batch"], s["env_threads"])
    lrn = _learner_row(results, s["batch_size"], s.get("learner_variant", "eager-fp32"))
    parts = {}
    if env:
        parts["env"] = env["steps_per_s"]
    if lrn:
        parts["learner"] = lrn["updates_per_s"] * s["batch_size"] / s["replay_ratio"]
    if not parts:
        return None, "", parts
    which = min(parts, key=parts.get)
    what = (
        f"env N={s['num_envs']} b={s['env_batch']}"
        if which == "env"
        else f"{s['batch_size'] / s['replay_ratio']:g} x learner B={s['batch_size']} {lrn['variant']}"
    )
    if len(parts) < 2:
        what += " (other part missing)"
    return parts[which], what, parts


def _mode_key(r: dict) -> str:
    return f"sync_n{r['num_envs']}" if r["batch"] == r["num_envs"] else f"async_n{r['num_envs']}_b{r['batch']}"


def report_stage(stage, results, p, args, metrics: Metrics, notes, summary, device) -> None:
    res = results[stage]
    rows = [r for r in res["rows"] if "error" not in r]
    for n in res["notes"]:
        notes.append(f"{stage}: {n}")
    if res["error"]:
        notes.append(f"{stage}: {res['error']}")
    if stage == "env":
        for r in rows:
            metrics.emit(f"fps.env_{_mode_key(r)}_t{r['threads']}", round(r["steps_per_s"]), "steps/s")
        best: dict = {}
        for r in rows:
            k = _mode_key(r)
            if k not in best or r["steps_per_s"] > best[k]["steps_per_s"]:
                best[k] = r
        for k, r in best.items():
            metrics.emit(f"fps.env_{k}", round(r["steps_per_s"]), "steps/s", f"best of threads; threads={r['threads']}")
            metrics.emit(f"fps.env_{k}_frames", round(r["frames_per_s"]), "frames/s")
            summary.append(
                {
                    "stage": "env" + (" (bound)" if p["bound_only"]["env"] else ""),
                    "setting": f"N={r['num_envs']} batch={r['batch']} threads={r['threads']}",
                    "figure": r["steps_per_s"],
                    "unit": "steps/s",
                    "bound": None,
                    "bound_what": f"{r['frames_per_s']:,.0f} frames/s",
                    "ratio": None,
                    "other_cpu": _other(r),
                }
            )
    elif stage == "actor":
        for r in rows:
            env = _env_row(results, r["num_envs"], r["batch"], r["threads"])
            k = _mode_key(r)
            metrics.emit(
                f"fps.actor_{k}", round(r["steps_per_s"]), "steps/s", f"threads={r['threads']} device={r['device']}"
            )
            ratio = r["steps_per_s"] / env["steps_per_s"] if env else None
            r["vs_env"] = ratio
            if ratio is not None:
                metrics.emit(f"fps.actor_{k}_vs_env", round(ratio, 3), "x")
            summary.append(
                {
                    "stage": "actor",
                    "setting": f"N={r['num_envs']} batch={r['batch']} threads={r['threads']}",
                    "figure": r["steps_per_s"],
                    "unit": "steps/s",
                    "bound": env["steps_per_s"] if env else None,
                    "bound_what": "env, same N/batch/threads",
                    "ratio": ratio,
                    "other_cpu": _other(r),
                }
            )
    elif stage == "replay":
        by_b: dict = {}
        for r in rows:
            by_b.setdefault(r["batch_size"], []).append(r)
        for b, rs in sorted(by_b.items()):
            dq = [r for r in rs if r["impl"] == "dqnfast"]
            mc = next((r for r in rs if r["impl"] == "memcpy-numpy"), None)
            for r in dq:
                metrics.emit(f"fps.replay_sample_B{b}_threads{r['threads']}", round(r["samples_per_s"]), "samples/s")
            if not dq:
                continue
            top = max(dq, key=lambda r: r["samples_per_s"])
            metrics.emit(
                f"fps.replay_sample_B{b}",
                round(top["samples_per_s"]),
                "samples/s",
                f"best of threads; threads={top['threads']}",
            )
            ratio = None
            if mc:
                metrics.emit(
                    f"fps.replay_memcpy_B{b}",
                    round(mc["samples_per_s"]),
                    "samples/s",
                    "numpy copy of the same bytes, 1 thread",
                )
                ratio = top["samples_per_s"] / mc["samples_per_s"]
                metrics.emit(f"fps.replay_sample_B{b}_vs_memcpy", round(ratio, 3), "x")
            summary.append(
                {
                    "stage": "replay",
                    "setting": f"B={b} threads={top['threads']} cap={top.get('capacity')}",
                    "figure": top["samples_per_s"],
                    "unit": "samples/s",
                    "bound": mc["samples_per_s"] if mc else None,
                    "bound_what": "memcpy, numpy 1 thread",
                    "ratio": ratio,
                    "other_cpu": _other(top),
                }
            )
    elif stage == "learner":
        for r in rows:
            eager = _learner_row(results, r["batch_size"], "eager-fp32")
            key = f"fps.learner_B{r['batch_size']}_{r['variant'].replace('-', '_')}"
            metrics.emit(key, round(r["updates_per_s"], 1), "updates/s", f"{r['ms_per_update']:.3f} ms/update")
            ratio = r["updates_per_s"] / eager["updates_per_s"] if eager else None
            r["vs_eager"] = ratio
            if ratio is not None and r["variant"] != "eager-fp32":
                metrics.emit(f"{key}_vs_eager", round(ratio, 3), "x")
            summary.append(
                {
                    "stage": "learner" + (" (bound)" if p["bound_only"]["learner"] else ""),
                    "setting": f"B={r['batch_size']} {r['variant']} ({r['ms_per_update']:.2f} ms)",
                    "figure": r["updates_per_s"],
                    "unit": "updates/s",
                    "bound": eager["updates_per_s"] if eager and r["variant"] != "eager-fp32" else None,
                    "bound_what": "eager fp32, same B" if r["variant"] != "eager-fp32" else "",
                    "ratio": ratio if r["variant"] != "eager-fp32" else None,
                    "other_cpu": _other(r),
                }
            )
        for r in rows:
            if r.get("note"):
                notes.append(
                    f"learner B={r['batch_size']} {r['variant']}: {r['note']} "
                    f"({r.get('cudagraph_skips')} skips, {r.get('graph_breaks')} graph breaks)"
                )
        for r in res["rows"]:
            if "error" in r:
                summary.append(
                    {
                        "stage": "learner",
                        "setting": f"B={r['batch_size']} {r['variant']}",
                        "figure": "failed",
                        "bound_what": r["error"][:60],
                    }
                )
    elif stage == "e2e":
        for r in rows:
            s = next(x for x in p["e2e"] if x["name"] == r["setting"])
            bound, what, parts = _e2e_bound(s, results)
            name = f"fps.e2e_{r['setting']}"
            metrics.emit(
                name,
                round(r["sps"], 1),
                "steps/s",
                f"N={r['num_envs']} batch={r['env_batch']} B={r['batch_size']} ratio={r['replay_ratio']:g}",
            )
            r.update(bound=bound, bound_what=what, bound_parts=parts)
            if bound:
                metrics.emit(f"{name}_bound", round(bound, 1), "steps/s", what)
                r["vs_bound"] = r["sps"] / bound
                metrics.emit(f"{name}_vs_bound", round(r["vs_bound"], 3), "x")
            r["vs_cleanrl"] = r["sps"] / CLEANRL_SPS
            metrics.emit(f"{name}_vs_cleanrl", round(r["vs_cleanrl"], 2), "x", "vs the CEO's 330 steps/s (H100)")
            if r.get("random_phase_sps"):
                metrics.emit(
                    f"{name}_random_phase",
                    round(r["random_phase_sps"]),
                    "steps/s",
                    "before learning starts: env + ring + uniform-random actions",
                )
            summary.append(
                {
                    "stage": "e2e",
                    "setting": f"{r['setting']}: N={r['num_envs']} batch={r['env_batch']} "
                    f"B={r['batch_size']} ratio {r['replay_ratio']:g}",
                    "figure": r["sps"],
                    "unit": "steps/s",
                    "bound": bound,
                    "bound_what": what,
                    "ratio": r.get("vs_bound"),
                    "other_cpu": r.get("foreign_cores"),
                }
            )
        for r in res["rows"]:
            if "error" in r:
                summary.append(
                    {"stage": "e2e", "setting": r["setting"], "figure": "failed", "bound_what": r["error"][:60]}
                )
    elif stage == "peer":
        for r in rows:
            metrics.emit(
                "fps.peer",
                round(r["sps"], 1),
                "steps/s",
                f"single env, gymnasium + ale-py, deque replay, eager torch on {r['device']}",
            )
            metrics.emit("fps.peer_fill", round(r["fill_sps"]), "steps/s", "random play + replay append")
            if r.get("resize") != "cv2":
                notes.append(
                    f"peer: resized with the {r.get('resize')} for cv2.resize (no OpenCV here): "
                    "same pixels, about 20 us a step slower"
                )
            for e in results.get("e2e", {}).get("rows", []):
                if "sps" in e:
                    e["vs_peer"] = e["sps"] / r["sps"]
                    metrics.emit(f"fps.e2e_{e['setting']}_vs_peer", round(e["vs_peer"], 2), "x")
                    summary.append(
                        {
                            "stage": "peer",
                            "setting": f"dqnfast e2e {e['setting']} / peer",
                            "figure": e["sps"],
                            "unit": "steps/s",
                            "bound": r["sps"],
                            "bound_what": "peer_dqn.py (the baseline)",
                            "ratio": e["vs_peer"],
                        }
                    )
            summary.append(
                {
                    "stage": "peer",
                    "setting": "single env, Nature ratio",
                    "figure": r["sps"],
                    "unit": "steps/s",
                    "bound": CLEANRL_SPS,
                    "bound_what": "CleanRL, CEO's H100 figure",
                    "ratio": r["sps"] / CLEANRL_SPS,
                }
            )
            if "e2e" not in args.stages:
                notes.append(
                    "peer: run with --stage e2e,peer (or all) for dqnfast's end-to-end SPS as a multiple of it"
                )


def judge_targets(results, p, metrics: Metrics, notes, cuda: bool) -> None:
    """The speed targets (for a CUDA machine): printed PASS/FAIL, informational elsewhere."""
    lines = []
    actor = [r for r in results.get("actor", {}).get("rows", []) if r.get("vs_env") is not None]
    if actor:
        worst = min(actor, key=lambda r: r["vs_env"])
        text = (
            f"actor >= {TARGETS['actor_vs_env']:g} x env at the same N (worst: N={worst['num_envs']} "
            f"batch={worst['batch']})"
        )
        lines.append((text, worst["vs_env"], TARGETS["actor_vs_env"]))
    g = _learner_row(results, 32, "graphs-fp32")
    e = _learner_row(results, 32, "eager-fp32")
    if g and e:
        lines.append(
            (
                "compile+CUDA graphs >= 3 x eager at B=32 (fp32)",
                g["updates_per_s"] / e["updates_per_s"],
                TARGETS["graphs_vs_eager_B32"],
            )
        )
    for r in results.get("e2e", {}).get("rows", []):
        if "sps" not in r:
            continue
        if r.get("vs_bound") is not None:
            lines.append((f"e2e {r['setting']} >= 0.8 x its bound", r["vs_bound"], TARGETS["e2e_vs_bound"]))
        lines.append((f"e2e {r['setting']} >= 15 x CleanRL (330 steps/s)", r["vs_cleanrl"], TARGETS["e2e_vs_cleanrl"]))
        if r.get("vs_peer") is not None:
            lines.append((f"e2e {r['setting']} >= 20 x peer", r["vs_peer"], TARGETS["e2e_vs_peer"]))
    if not lines:
        return
    where = "" if cuda else " -- targets are for a CUDA machine; informational on CPU"
    print(f"targets{where}:")
    for text, value, want in lines:
        print(f"  {text}: {value:.3g} -> {'PASS' if value >= want else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
