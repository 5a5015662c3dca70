"""A roofline for the CPU learner: how close the DQN update comes to what the same cores can do.

The learner's update (double DQN on the Nature CNN: the online forward on ``obs`` and on
``next_obs`` for the argmax, the target forward on ``next_obs``, the backward, the Adam step) is
the bound of a CPU run. This script puts its achieved arithmetic rate beside the practical peak
of the same cores, measured in the same process with the same torch threads:

    update     FLOPs per update (torch.utils.flop_counter over one real ``Learner.update``:
               convolutions and matrix products, forward and backward) x updates/s
               = achieved GFLOP/s, eager and torch.compile
    gemm       an fp32 matrix product (n x n x n, n = 1024 and 2048): the cores' practical peak
               for dense fp32 arithmetic; the best of the sizes is the roofline
    convs      the Nature CNN's three convolutions and two linear layers, forward and backward, at
               a large batch (256): what these exact layer shapes reach when the batch is big,
               the ceiling a batch-32 update could approach with perfect kernels

    adam       the Adam step on the Nature CNN's parameters: torch's CPU default (a loop over the
               tensors), foreach and the fused kernel (part of ``layers``)
    updates    whole eager updates side by side, alternating: the Adam implementations, three
               ways of channels_last, and bf16 autocast of the no-grad forwards (``UPDATE_VARIANTS``)
    layers     the update's parts side by side, alternating (min over repetitions): the online
               network's forward+backward in the default layout and channels_last, and the
               no-grad forward (the target's and the double-DQN argmax's) in fp32 and under bf16
               autocast: the levers a CPU default can pull without changing the maths (layout)
               or with a change a learning check must clear (bf16)
    fraction   update GFLOP/s / gemm GFLOP/s (and / convs GFLOP/s): the share of the cores'
               practical peak the update uses; the rest is overhead (small-batch kernels, the
               optimizer, the elementwise ops between the layers, Python)

One line per figure, and a per-operator table of where an eager update's time goes
(``--profile``). Results go under ``"roofline"`` in ``benchmarks/results/cpu_throughput.json``
(other keys of that file are kept), with the machine's description. Ratios are measured side by
side in one process; nothing here asserts on time.

    python benchmarks/roofline.py                       # torch threads: every core, then 1
    python benchmarks/roofline.py --threads 1 --quick   # a smoke test of a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_REPO) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_REPO))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import torch  # noqa: E402
from common import cpu_count, default_learner, machine_info, time_rate  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dqnfast.agent.dqn import Learner  # noqa: E402
from dqnfast.agent.networks import NatureCNN  # noqa: E402

NUM_ACTIONS = 6  # SpaceInvaders; the head is a negligible share of the FLOPs


def _batch(b: int, seed: int = 0) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g),
        next_obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=g),
        action=torch.randint(0, NUM_ACTIONS, (b,), generator=g),
        reward=torch.randint(-1, 2, (b,), generator=g).float(),
        discount=torch.full((b,), 0.99),
    )


def _learner(compile_mode: str | None) -> Learner:
    torch.manual_seed(0)
    return default_learner(NUM_ACTIONS, "cpu", compile_mode)


def update_flops(b: int) -> int:
    """FLOPs of one eager update (what the compiled one computes too: same maths)."""
    learner, batch = _learner(None), _batch(b)
    learner.update(batch)  # lazy state (Adam's moments) outside the count
    with FlopCounterMode(display=False) as fc:
        learner.update(batch)
    return int(fc.get_total_flops())


def update_rate(b: int, compile_mode: str | None, min_time: float) -> dict:
    learner, batch = _learner(compile_mode), _batch(b)
    t0 = time.perf_counter()
    learner.update(batch)
    first = time.perf_counter() - t0
    if learner.compile_mode != compile_mode:
        raise RuntimeError("compiling failed; the learner fell back to eager")
    tm = time_rate(lambda: learner.update(batch), 1.0, min_time=min_time, reps=3, warmup=3)
    return {"updates_per_s": tm["rate"], "first_call_s": first, "clean": tm["clean"], "rates": tm["rates"]}


def gemm_gflops(n: int, min_time: float) -> float:
    a, c = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    tm = time_rate(lambda: torch.mm(a, c, out=out), 2.0 * n**3 / 1e9, min_time=min_time, reps=3, warmup=2)
    return tm["rate"]


def convs_gflops(b: int, min_time: float) -> float:
    """The Nature CNN's layers forward + backward at batch ``b`` (float input, no optimizer)."""
    torch.manual_seed(0)
    net = NatureCNN(4, NUM_ACTIONS)
    x = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    step()
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    tm = time_rate(step, flops / 1e9, min_time=min_time, reps=3, warmup=1)
    return tm["rate"]


def parts(b: int, reps: int = 5, calls: int = 10) -> dict:
    """ms per call of the update's parts, each variant timed in turn (min over ``reps``)."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8)
    nets = {"default": NatureCNN(4, NUM_ACTIONS), "channels_last": NatureCNN(4, NUM_ACTIONS)}
    nets["channels_last"].to(memory_format=torch.channels_last)

    def train_step(net: torch.nn.Module) -> None:
        net.zero_grad(set_to_none=True)
        net(x).sum().backward()

    def forward(net: torch.nn.Module, bf16: bool) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            net(x)

    adams = {}
    for impl, kw in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        net = NatureCNN(4, NUM_ACTIONS)
        for p in net.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        adams[impl] = torch.optim.Adam(net.parameters(), lr=1e-4, eps=1.5e-4, **kw)

    fns = {
        "adam_step_loop": adams["loop"].step,
        "adam_step_foreach": adams["foreach"].step,
        "adam_step_fused": adams["fused"].step,
        "fwd_bwd_fp32": lambda: train_step(nets["default"]),
        "fwd_bwd_fp32_channels_last": lambda: train_step(nets["channels_last"]),
        "fwd_nograd_fp32": lambda: forward(nets["default"], False),
        "fwd_nograd_fp32_channels_last": lambda: forward(nets["channels_last"], False),
        "fwd_nograd_bf16": lambda: forward(nets["default"], True),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: min(v) for k, v in times.items()}


# The whole update with each lever pulled in turn: torch's default Adam on the CPU (the per-tensor
# loop), the fused Adam kernel, then channels_last three ways: the gradient forward's input only
# (``algo.channels_last=train``: its backward follows, the no-grad forwards keep NCHW), the online
# network's weights (every forward of it), both networks' weights (``algo.channels_last=true``).
# Last, ``algo.amp=bf16_nograd`` on top of the CPU defaults (a change of rounding a learning check
# must clear: opt-in). (Adam's keywords, networks with NHWC weights, NHWC gradient forward, bf16 no-grad)
UPDATE_VARIANTS = {
    "update_adam_loop": ({"foreach": False}, (), False, False),
    "update_adam_fused": ({"fused": True}, (), False, False),
    "update_adam_fused_train_channels_last": ({"fused": True}, (), True, False),
    "update_adam_fused_online_channels_last": ({"fused": True}, ("online",), False, False),
    "update_adam_fused_both_channels_last": ({"fused": True}, ("online", "target"), False, False),
    "update_adam_fused_train_channels_last_bf16_nograd": ({"fused": True}, (), True, True),
}


def updates(b: int, reps: int = 5, calls: int = 5) -> dict:
    """ms per eager ``Learner.update`` for each of ``UPDATE_VARIANTS``, timed in turn (min over ``reps``)."""
    batch = _batch(b)
    learners = {}
    for name, (adam_kw, layout, train_nhwc, bf16_nograd) in UPDATE_VARIANTS.items():
        torch.manual_seed(0)
        nets = {"online": NatureCNN(4, NUM_ACTIONS), "target": NatureCNN(4, NUM_ACTIONS)}
        nets["target"].load_state_dict(nets["online"].state_dict())
        for k in layout:
            nets[k].to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(nets["online"].parameters(), lr=1e-4, eps=1.5e-4, **adam_kw)
        learners[name] = Learner(
            nets["online"],
            nets["target"],
            opt,
            target_update_period=10**9,
            device="cpu",
            channels_last=train_nhwc,
            nograd_amp_dtype=torch.bfloat16 if bf16_nograd else None,
        )
    for lr in learners.values():
        for _ in range(3):
            lr.update(batch)
    times: dict[str, list[float]] = {k: [] for k in learners}
    for _ in range(reps):
        for k, lr in learners.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                lr.update(batch)
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    return {k: min(v) for k, v in times.items()}


def profile(b: int, top: int = 12) -> list[dict]:
    """Self CPU time per operator over 20 eager updates, the largest first."""
    learner, batch = _learner(None), _batch(b)
    for _ in range(3):
        learner.update(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(20):
            learner.update(batch)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1
    return [
        {"op": e.key, "self_ms_per_update": e.self_cpu_time_total / 1e3 / 20, "share": e.self_cpu_time_total / total}
        for e in rows[:top]
    ]


def measure(threads: int, args) -> dict:
    torch.set_num_threads(threads)
    mt = 0.3 if args.quick else args.min_time
    flops = update_flops(args.batch_size)
    out: dict = {"torch_threads": threads, "batch_size": args.batch_size, "flops_per_update": flops}
    out["gemm_gflops"] = {str(n): gemm_gflops(n, mt) for n in ((512,) if args.quick else (1024, 2048))}
    peak = max(out["gemm_gflops"].values())
    out["peak_gflops"] = peak
    out["convs_gflops_b256"] = convs_gflops(64 if args.quick else 256, mt)
    modes = {"eager": None} if args.no_compile else {"eager": None, "compile": "default"}
    for name, mode in modes.items():
        try:
            r = update_rate(args.batch_size, mode, mt)
        except Exception as e:  # noqa: BLE001 - a failed compile must not hide the eager figure
            out[name] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
            print(f"threads={threads} {name}: failed ({out[name]['error']})", flush=True)
            continue
        r["gflops"] = flops * r["updates_per_s"] / 1e9
        r["fraction_of_gemm"] = r["gflops"] / peak
        r["fraction_of_convs"] = r["gflops"] / out["convs_gflops_b256"]
        out[name] = r
        print(
            f"threads={threads} {name:7s} {r['updates_per_s']:8.1f} updates/s  {r['gflops']:6.1f} GFLOP/s"
            f"  = {r['fraction_of_gemm']:.2f} of GEMM peak {peak:.1f}, {r['fraction_of_convs']:.2f} of the"
            f" layers at B=256 ({out['convs_gflops_b256']:.1f})",
            flush=True,
        )
    out["parts_ms"] = parts(args.batch_size, reps=2 if args.quick else 5)
    print("    " + "  ".join(f"{k} {v:.2f} ms" for k, v in out["parts_ms"].items()), flush=True)
    out["updates_ms"] = updates(args.batch_size, reps=2 if args.quick else 5)
    base = out["updates_ms"]["update_adam_loop"]
    print("    " + "  ".join(f"{k} {v:.2f} ms ({base / v:.2f}x)" for k, v in out["updates_ms"].items()), flush=True)
    if args.profile:
        out["profile_eager"] = profile(args.batch_size)
        for row in out["profile_eager"]:
            print(f"    {row['op']:40s} {row['self_ms_per_update']:7.2f} ms/update  {row['share']:5.1%}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=None, help="torch threads (default: every core, then 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds per timed repetition")
    p.add_argument("--no-compile", action="store_true", help="eager only (torch.compile takes a minute on CPU)")
    p.add_argument("--profile", action="store_true", help="per-operator self time of an eager update")
    p.add_argument("--quick", action="store_true", help="a smoke test: small sizes, short timings")
    p.add_argument("--json", default=str(_HERE / "results" / "cpu_throughput.json"))
    args = p.parse_args(argv)
    threads = args.threads or sorted({cpu_count(), 1}, reverse=True)
    flops = update_flops(args.batch_size)
    print(f"one update at B={args.batch_size}: {flops / 1e9:.3f} GFLOP (forward and backward)", flush=True)
    rows = [measure(t, args) for t in threads]
    path = Path(args.json)
    doc = json.loads(path.read_text()) if path.exists() else {}
    from dqnfast.hardware import probe

    cpu = probe()
    doc["roofline"] = {"machine": machine_info(), "cpu_features": cpu.describe(), "rows": rows, "quick": args.quick}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
