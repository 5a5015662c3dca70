"""Learning curves: does the default recipe learn Atari, and how does it compare with the peer?

Runs the real CLI (``python -m dqnfast.train``) for a list of games and seeds at a named
budget, optionally the peer (``benchmarks/peer_dqn.py --learn``: CleanRL's ``dqn_atari.py``
recipe and loop) beside it on the same machine at the same time, then reads every run's
``metrics.csv`` and ``eval.json`` and writes

    benchmarks/results/learning.json      (budget ``cpu``; ``learning_<budget>.json`` otherwise)
    docs/learning_<budget>.png            score (mean of the last 100 games) against agent steps,
                                          one line per agent and seed, random and human reference
                                          lines, the final evaluation as a point with its std,
                                          and the published 10M-step scores on the ``full`` budget

Budgets (agent steps; 1 agent step = 4 frames on Atari, 1 on MinAtar):

    cpu    300k steps: the default recipe scaled the way the field scales DQN to short runs
           (``preset=cpu_budget``: 20k random steps, epsilon 1 -> 0.01 reached at 75k, a 100k
           replay, target sync every 1000 agent steps, 30 evaluation games); the peer gets the
           same numbers in CleanRL's form (epsilon decays from step 0, as CleanRL)
    full   the default 10M-step recipe (a GPU-sized job); the peer runs CleanRL's defaults
    minatar  300k frames of each of MinAtar's five games (``--games Breakout ...`` plays
           ``gym:MinAtar/Breakout-v1``) with the paper's DQN (``preset=minatar``), no peer:
           python benchmarks/learning.py --budget minatar --seeds 1 --parallel 2 --threads 1
    tiny   a few thousand steps: checks that this script and the peer still run (tests)

A run folder that already holds an ``eval.json`` is read, not run again (``--rerun`` to redo),
so an interrupted benchmark continues where it stopped and long runs started by hand under
``<out>/<budget>/<game>/<agent>_seed<k>`` are collected too.

Regression check: a stored threshold per (budget, game) on the final evaluation's mean score
(``THRESHOLDS``; Breakout at the ``cpu`` budget must reach 10, random play scores 1.7). A run
below its threshold makes the script exit with status 1 and say so.

    python benchmarks/learning.py --budget cpu --games Breakout Pong --seeds 1 --peer Breakout
    python benchmarks/learning.py --budget cpu --collect      # only read finished runs

One change at a time (``--variants``, see ``VARIANTS``): ``dqnfast+<name>`` runs the default
recipe with one departure (bf16 autocast, MSE loss, the max target, no gradient clipping,
one env, prioritized replay), in its own folder, drawn in its own colour; ``--no-default`` runs only the variants
(and only the peer's variants). Other learners at the budget's schedule: ``c51`` and ``rainbow``, with the peer's
C51 (CleanRL's ``c51_atari.py``, ``--peer-variants c51``, agent ``peer+c51``) started beside them:

    python benchmarks/learning.py --budget cpu --games Breakout --seeds 1 --variants c51 --peer Breakout \
        --peer-variants c51 --no-default

    python benchmarks/learning.py --budget cpu --games Breakout --seeds 1 2 --variants bf16 --no-default
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
if str(_REPO) not in sys.path:  # run as a script from anywhere: find dqnfast
    sys.path.insert(0, str(_REPO))
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from common import cpu_count, machine_info  # noqa: E402

# Hydra overrides of the dqnfast run, and the peer's command-line flags, per budget.
BUDGETS: dict[str, dict] = {
    "cpu": {
        "steps": 300_000,
        "dqnfast": ["preset=cpu_budget"],
        "peer": [
            "--total-steps",
            "300000",
            "--learning-starts",
            "20000",
            "--exploration-steps",
            "75000",
            "--end-e",
            "0.01",
            "--capacity",
            "100000",
            "--target-every-steps",
            "1000",
            "--eval-episodes",
            "30",
        ],
    },
    "full": {
        "steps": 10_000_000,
        "dqnfast": [],
        "peer": [
            "--total-steps",
            "10000000",
            "--learning-starts",
            "80000",
            "--exploration-steps",
            "1000000",
            "--end-e",
            "0.01",
            "--capacity",
            "1000000",
            "--target-every-steps",
            "1000",
            "--eval-episodes",
            "30",
            "--log-every",
            "100000",
        ],
    },
    # MinAtar's five games with the paper's DQN (preset=minatar: one update per frame), 1 agent step = 1 frame,
    # the first 300k of the paper's 5M frames (about 30 min a game on one core); no peer
    "minatar": {
        "steps": 300_000,
        "dqnfast": ["preset=minatar", "algo.total_steps=300000"],
        "peer": [],
    },
    "tiny": {
        "steps": 1200,
        "dqnfast": [
            "preset=cpu_budget",
            "algo.total_steps=1200",
            "algo.learning_starts=800",
            "replay.capacity=2000",
            "explore.decay_steps=400",
            "envs.num_envs=2",
            "envs.eval.episodes=2",
            "envs.eval.num_envs=2",
            "envs.eval.max_episode_steps=300",
            "logger.log_every=400",
            "logger.checkpoint_every=0",
        ],
        "peer": [
            "--total-steps",
            "800",
            "--learning-starts",
            "400",
            "--exploration-steps",
            "400",
            "--end-e",
            "0.01",
            "--capacity",
            "1000",
            "--target-every-steps",
            "200",
            "--eval-episodes",
            "1",
            "--log-every",
            "400",
        ],
    },
}

# One-change-at-a-time departures from the default recipe (``--variants``): each runs as agent
# ``dqnfast+<name>`` in its own folder, with these overrides added to the budget's.
VARIANTS: dict[str, list[str]] = {
    "bf16": ["algo.amp=bf16"],  # bfloat16 autocast of the forward passes (changes the maths)
    "mse": ["algo.loss=mse"],  # CleanRL's loss instead of Huber
    "max": ["algo.double=false"],  # the Nature max target instead of double DQN
    "noclip": ["algo.max_grad_norm=null"],  # no gradient-norm clipping (CleanRL has none)
    "1env": ["envs.num_envs=1"],  # one env, as CleanRL, instead of 8
    "per": ["replay.prioritized=true"],  # proportional prioritized replay, alpha 0.6, beta 0.4 -> 1
    # every recipe departure from CleanRL's dqn_atari.py at once (MSE, max target, no clipping, one env):
    # where the default trails the peer, this run says whether the recipe is the cause (it catches up)
    # or what differs is elsewhere (the emulator's wrappers, the epsilon schedule's first 20k steps)
    "cleanrl": ["algo.loss=mse", "algo.double=false", "algo.max_grad_norm=null", "envs.num_envs=1"],
    # ...and CleanRL's epsilon schedule too: from 1 at the first step to 0.01 at 75k (the budget's
    # 20k + 55k), falling through the warm-up, instead of uniform-random play until learning starts
    "cleanrl_eps": [
        "algo.loss=mse",
        "algo.double=false",
        "algo.max_grad_norm=null",
        "envs.num_envs=1",
        "explore.from_start=true",
        "explore.decay_steps=75000",
    ],
    # C51 (preset=c51's learner at the budget's schedule): the categorical head, the target network's
    # greedy next action, Adam 2.5e-4 / 3.125e-4 and no gradient clipping, as Bellemare et al. 2017
    "c51": [
        "algo.distributional=c51",
        "algo.double=false",
        "optim.lr=2.5e-4",
        "optim.eps=3.125e-4",
        "algo.max_grad_norm=null",
    ],
    # C51 with one env, as CleanRL's c51_atari.py (8 by default): one of what is left between the two C51 runs
    "c51_1env": [
        "algo.distributional=c51",
        "algo.double=false",
        "optim.lr=2.5e-4",
        "optim.eps=3.125e-4",
        "algo.max_grad_norm=null",
        "envs.num_envs=1",
    ],
    # the full Rainbow (preset=rainbow's learner at the budget's schedule): C51 with double-DQN
    # selection, noisy dueling head (no epsilon-greedy), 3-step returns, prioritized replay
    # (alpha 0.5, beta 0.4 -> 1), Adam 6.25e-5 / 1.5e-4, no gradient clipping (Hessel et al. 2018)
    "rainbow": [
        "algo.distributional=c51",
        "network.noisy=true",
        "network.dueling=true",
        "replay.n_step=3",
        "replay.prioritized=true",
        "replay.alpha=0.5",
        "replay.beta0=0.4",
        "optim.lr=6.25e-5",
        "optim.eps=1.5e-4",
        "algo.max_grad_norm=null",
        "explore.start=0.0",
        "explore.end=0.0",
    ],
}

# The peer's other recipes (``--peer-variants``): agent ``peer+<name>``, these flags added to the budget's.
PEER_VARIANTS: dict[str, list[str]] = {
    # CleanRL's c51_atari.py: 51 atoms on [-10, 10], Adam lr 2.5e-4, eps 0.01/32
    "c51": ["--algo", "c51", "--lr", "2.5e-4", "--adam-eps", "3.125e-4"],
    # the peer's loop, replay and learner on envpool's Atari env, as dqnfast plays: where dqnfast trails the
    # peer, this run says whether the emulator pipeline is the cause (it trails too) or the learner is (it does not)
    "envpool": ["--emulator", "envpool"],
    "c51_envpool": ["--algo", "c51", "--lr", "2.5e-4", "--adam-eps", "3.125e-4", "--emulator", "envpool"],
}

# Final-evaluation mean score a run must reach: the regression check of the default recipe.
THRESHOLDS: dict[tuple[str, str], float] = {("cpu", "Breakout"): 10.0}

# Training scores whose wall time to reach each run records (``time_to_score``): the speed that matters to a
# user, learning and throughput together; compare runs that shared a machine only with each other.
SCORE_MARKS: dict[str, float] = {"Breakout": 20.0, "SpaceInvaders": 250.0, "Pong": 0.0}

# Published final scores after long training, for the ``full`` budget's plot and the README.
# Labelled as published: dqnfast has not reproduced them until a ``full`` run exists.
PUBLISHED: dict[str, list[dict]] = {
    "Breakout": [
        {"source": "Nature DQN (Mnih et al. 2015, Ext. Data Table 2)", "score": 401.2, "agent_steps": 12_500_000},
        {"source": "CleanRL dqn_atari.py (3 seeds)", "score": 366.928, "agent_steps": 10_000_000},
    ],
    "Pong": [
        {"source": "Nature DQN (Mnih et al. 2015, Ext. Data Table 2)", "score": 18.9, "agent_steps": 12_500_000},
        {"source": "CleanRL dqn_atari.py (3 seeds)", "score": 20.25, "agent_steps": 10_000_000},
    ],
}


# The minatar budget names a game by its MinAtar name; dqnfast plays it through the minatar package's Gymnasium id.
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")

# Agent steps of uniform-random play before learning, per budget (dqnfast's runs).
LEARNING_STARTS: dict[str, int] = {"cpu": 20_000, "full": 50_000, "minatar": 5_000, "tiny": 800}


def game_id(budget: str, game: str) -> str:
    """The ``game=`` dqnfast is given: ``Breakout`` on the minatar budget is ``gym:MinAtar/Breakout-v1``."""
    return f"gym:MinAtar/{game}-v1" if budget == "minatar" else game


def run_dir(out: Path, budget: str, game: str, agent: str, seed: int) -> Path:
    return out / budget / game / f"{agent}_seed{seed}"


def variant_of(agent: str) -> str | None:
    """``dqnfast+mse`` -> ``mse``; the default recipe and the peer have none."""
    return agent.split("+", 1)[1] if agent.startswith("dqnfast+") else None


def peer_variant_of(agent: str) -> str | None:
    """``peer+c51`` -> ``c51``; the peer's DQN recipe has none."""
    return agent.split("+", 1)[1] if agent.startswith("peer+") else None


def dqnfast_command(
    budget: str, game: str, seed: int, folder: Path, threads: int, device: str, extra: list[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "dqnfast.train",
        f"game={game_id(budget, game)}",
        f"seed={seed}",
        *BUDGETS[budget]["dqnfast"],
        f"torch_threads={threads}",
        "logger.progress=false",
        f"device={device}",
        f"hydra.run.dir={folder}",
        *extra,
    ]


def peer_command(
    budget: str, game: str, seed: int, folder: Path, threads: int, device: str, variant: str | None = None
) -> list[str]:
    return [
        sys.executable,
        str(_HERE / "peer_dqn.py"),
        "--learn",
        "--game",
        game,
        "--seed",
        str(seed),
        *BUDGETS[budget]["peer"],
        *PEER_VARIANTS.get(variant or "", []),
        "--torch-threads",
        str(threads),
        "--device",
        device,
        "--out",
        str(folder),
    ]


def launch(jobs: list[tuple[str, list[str], Path]], parallel: int) -> dict[str, float]:
    """Runs the commands, at most ``parallel`` at once, each logging to ``<folder>.log``.

    Returns each job's wall seconds. A failed job is reported and leaves no eval.json, so
    ``collect`` lists it as unfinished.
    """
    pending = list(jobs)
    running: list[tuple[str, subprocess.Popen, float, Path]] = []
    walls: dict[str, float] = {}
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd, folder = pending.pop(0)
            folder.parent.mkdir(parents=True, exist_ok=True)
            log = open(folder.with_name(folder.name + ".log"), "w")
            print(f"start {name}: {' '.join(cmd[1:])}", flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=_REPO)
            log.close()
            running.append((name, proc, time.perf_counter(), folder))
        time.sleep(1.0)
        for item in list(running):
            name, proc, t0, folder = item
            if proc.poll() is not None:
                running.remove(item)
                walls[name] = time.perf_counter() - t0
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {folder}.log)"
                print(f"{status}: {name} in {walls[name]:.0f} s", flush=True)
    return walls


def discover(out: Path, budget: str) -> list[tuple[str, str, int]]:
    """Every ``<out>/<budget>/<game>/<agent>_seed<k>`` run folder with a metrics.csv, as (agent, game, seed)."""
    found = []
    for m in sorted((out / budget).glob("*/*_seed*/metrics.csv")):
        agent, _, seed = m.parent.name.rpartition("_seed")
        known = agent in ("dqnfast", "peer") or variant_of(agent) in VARIANTS or peer_variant_of(agent) in PEER_VARIANTS
        if seed.isdigit() and known:
            found.append((agent, m.parent.parent.name, int(seed)))
    return found


def read_metrics(path: Path) -> list[dict]:
    """metrics.csv rows with numbers parsed (empty and nan cells as None)."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                try:
                    x = float(v)
                    parsed[k] = None if math.isnan(x) else x
                except (TypeError, ValueError):
                    parsed[k] = None
            rows.append(parsed)
    return rows


def learning_phase_sps(rows: list[dict], learning_starts: int) -> float | None:
    """Agent steps per second from the first row at or after learning_starts to the last row."""
    after = [r for r in rows if r.get("env_steps") is not None and r["env_steps"] >= learning_starts]
    if len(after) < 2 or after[-1]["time"] is None or after[0]["time"] is None:
        return None
    dt = after[-1]["time"] - after[0]["time"]
    return (after[-1]["env_steps"] - after[0]["env_steps"]) / dt if dt > 0 else None


def collect_run(
    folder: Path, agent: str, game: str, seed: int, learning_starts: int, mark: float | None = None
) -> dict:
    """One run folder's curves, speed and final evaluation; ``mark``: the training score whose wall time to
    reach the run records (``time_to_score``), None for none."""
    out: dict = {"agent": agent, "game": game, "seed": seed, "folder": str(folder), "finished": False}
    metrics = folder / "metrics.csv"
    if metrics.is_file():
        rows = read_metrics(metrics)
        out["curve"] = [[r["env_steps"], r.get("score_mean")] for r in rows if r.get("env_steps") is not None]
        out["loss"] = [[r["env_steps"], r.get("loss")] for r in rows if r.get("env_steps") is not None]
        out["q_mean"] = [[r["env_steps"], r.get("q_mean")] for r in rows if r.get("env_steps") is not None]
        timed = [r for r in rows if r.get("env_steps") is not None and r.get("time") is not None]
        out["curve_hours"] = [[r["time"] / 3600, r.get("score_mean")] for r in timed]
        if mark is not None:
            hit = next((r for r in timed if r.get("score_mean") is not None and r["score_mean"] >= mark), None)
            out["time_to_score"] = {
                "score": mark,
                "seconds": hit["time"] if hit else None,
                "agent_steps": hit["env_steps"] if hit else None,
            }
        if rows and rows[-1].get("time"):
            out["agent_steps"] = rows[-1]["env_steps"]
            out["train_seconds"] = rows[-1]["time"]
            out["sps"] = rows[-1]["env_steps"] / rows[-1]["time"]
        out["learning_sps"] = learning_phase_sps(rows, learning_starts)
    ev = folder / "eval.json"
    if ev.is_file():
        doc = json.loads(ev.read_text())
        mean = doc.get("mean", doc.get("score_mean"))
        std = doc.get("std", doc.get("score_std"))
        rand = doc.get("random") or {}
        out["eval"] = {
            "mean": mean,
            "std": std,
            "episodes": doc.get("episodes"),
            "epsilon": doc.get("epsilon"),
            "scores": doc.get("scores"),
            "random_mean": rand.get("mean"),
            "human_normalized": doc.get("human_normalized"),
        }
        out["finished"] = True
    return out


def _curve(ax: Any, pts: list, colour: str, style: str, label: str | None = None) -> None:
    """One run's (x, score) points as a line, if it has any."""
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour, ls=style, alpha=0.9, label=label)


def plot(doc: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dqnfast.atari_scores import REFERENCE_SCORES

    games = sorted({r["game"] for r in doc["runs"]})
    fig, axes = plt.subplots(2, max(1, len(games)), figsize=(6.4 * max(1, len(games)), 8.4), squeeze=False)
    colours = {"dqnfast": "tab:blue", "peer": "tab:orange", "peer+c51": "gold"}
    colours.update(
        {
            f"dqnfast+{v}": c
            for v, c in zip(
                sorted(VARIANTS),
                (
                    "tab:green",
                    "tab:red",
                    "tab:purple",
                    "tab:brown",
                    "tab:pink",
                    "tab:olive",
                    "tab:cyan",
                    "black",
                    "magenta",
                    "darkgreen",
                    "navy",
                    "teal",
                ),
            )
        }
    )
    styles = ["-", "--", "-.", ":"]
    for ax, game in zip(axes[0], games):
        for r in (r for r in doc["runs"] if r["game"] == game):
            pts = [(s, v) for s, v in r.get("curve", []) if v is not None]
            name = {"peer": "peer (CleanRL recipe)", "peer+c51": "peer C51 (CleanRL recipe)"}.get(
                r["agent"], r["agent"]
            )
            _curve(
                ax,
                pts,
                colours.get(r["agent"], "grey"),
                styles[(r["seed"] - 1) % len(styles)],
                f"{name} seed {r['seed']}",
            )
            ev = r.get("eval")
            if ev and ev.get("mean") is not None and r.get("agent_steps"):
                ax.errorbar(
                    [r["agent_steps"]],
                    [ev["mean"]],
                    yerr=[ev.get("std") or 0],
                    fmt="o",
                    capsize=4,
                    color=colours.get(r["agent"], "grey"),
                )
        minatar = doc["budget"] == "minatar"
        ref = None if minatar else REFERENCE_SCORES.get(game)
        rand = [(r.get("eval") or {}).get("random_mean") for r in doc["runs"] if r["game"] == game]
        rand = [x for x in rand if x is not None]
        if minatar and rand:  # MinAtar has no published random/human table: the runs' own random agent
            ax.axhline(sum(rand) / len(rand), color="grey", ls=":", label=f"random {sum(rand) / len(rand):.2f}")
        if ref:
            ax.axhline(ref[0], color="grey", ls=":", label=f"random {ref[0]:g}")
            if doc["budget"] == "full" or ref[1] < 2 * max(
                [1.0]
                + [abs(p[1]) for r in doc["runs"] if r["game"] == game for p in r.get("curve", []) if p[1] is not None]
            ):
                ax.axhline(ref[1], color="grey", ls="--", label=f"human {ref[1]:g}")
        if doc["budget"] == "full":
            for p in PUBLISHED.get(game, []):
                ax.plot([p["agent_steps"]], [p["score"]], marker="*", ms=11, ls="none", label=p["source"])
        ax.set_title(
            f"{'MinAtar ' if minatar else ''}{game}, {doc['budget']} budget "
            f"({BUDGETS[doc['budget']]['steps']:,} {'frames' if minatar else 'agent steps'})"
        )
        ax.set_xlabel("frames (MinAtar: 1 agent step = 1 frame)" if minatar else "agent steps (1 = 4 frames)")
        ax.set_ylabel("score (mean of the last 100 games)")
        ax.plot([], [], "ko", label="final evaluation ± std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    for ax, game in zip(axes[1], games):  # the same curves against each run's own wall clock
        for r in (r for r in doc["runs"] if r["game"] == game):
            pts = [(h, v) for h, v in r.get("curve_hours", []) if v is not None]
            _curve(ax, pts, colours.get(r["agent"], "grey"), styles[(r["seed"] - 1) % len(styles)])
        if game in SCORE_MARKS and doc["budget"] != "minatar":
            ax.axhline(SCORE_MARKS[game], color="grey", ls="-.", lw=0.8, label=f"time to {SCORE_MARKS[game]:g}")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_xlabel("wall-clock hours of training (runs started together shared the machine)")
        ax.set_ylabel("score (mean of the last 100 games)")
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"dqnfast {doc['commit'][:8]} on {doc['machine'].get('cpu_model', 'this machine')}, {doc['date']}", fontsize=9
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument(
        "--games",
        nargs="+",
        default=None,
        help=f"games (default Breakout Pong; on the minatar budget MinAtar's: {' '.join(MINATAR_GAMES)})",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument(
        "--peer",
        nargs="*",
        default=[],
        metavar="GAME",
        help="games on which the peer (CleanRL recipe) also runs, at the same time as dqnfast",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=0,
        help="runs at once (0: all of them, so that dqnfast and the peer share the machine)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / runs at once)")
    p.add_argument("--device", default="auto", help="device of every run: auto (cuda if available) | cpu | cuda")
    p.add_argument("--out", default=str(_REPO / "outputs" / "learning"), help="where the run folders go")
    p.add_argument("--json", default="", help="result file (default benchmarks/results/learning[_<budget>].json)")
    p.add_argument("--plot", default="", help="plot file (default docs/learning_<budget>.png)")
    p.add_argument(
        "--variants",
        nargs="*",
        default=[],
        choices=sorted(VARIANTS),
        metavar="NAME",
        help=f"also run these one-change departures from the default recipe ({', '.join(sorted(VARIANTS))})",
    )
    p.add_argument(
        "--peer-variants",
        nargs="*",
        default=[],
        choices=sorted(PEER_VARIANTS),
        metavar="NAME",
        help=f"the peer's other recipes on the --peer games ({', '.join(sorted(PEER_VARIANTS))}): agent peer+<name>",
    )
    p.add_argument(
        "--no-default",
        action="store_true",
        help="run only the --variants (and the peer), not the default recipe",
    )
    p.add_argument(
        "--collect",
        action="store_true",
        help="do not run anything: read the finished runs (every run folder found under --out for the budget)",
    )
    p.add_argument("--rerun", action="store_true", help="run again even where an eval.json exists")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the dqnfast runs (key=value)")
    args = p.parse_args(argv)
    if args.games is None:
        args.games = list(MINATAR_GAMES) if args.budget == "minatar" else ["Breakout", "Pong"]
    if args.budget == "minatar":
        if args.peer or args.peer_variants:
            p.error("--peer: the minatar budget has no peer; drop --peer and --peer-variants")
        unknown = [g for g in args.games if g not in MINATAR_GAMES]
        if unknown:
            p.error(f"--games: {', '.join(unknown)} not MinAtar's; choose from {', '.join(MINATAR_GAMES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    budget = args.budget
    agents = ([] if args.no_default else ["dqnfast"]) + [f"dqnfast+{v}" for v in args.variants]
    plan = [(a, g, s) for a in agents for g in args.games for s in args.seeds]
    plan += [("peer", g, s) for g in args.peer for s in args.seeds if not args.no_default]
    plan += [(f"peer+{v}", g, s) for v in args.peer_variants for g in args.peer for s in args.seeds]
    if args.collect:
        plan += [x for x in discover(out, budget) if x not in plan]
    todo = [(a, g, s) for a, g, s in plan if args.rerun or not (run_dir(out, budget, g, a, s) / "eval.json").is_file()]
    walls: dict[str, float] = {}
    if todo and not args.collect:
        parallel = args.parallel or len(todo)
        threads = args.threads or max(1, cpu_count() // min(parallel, len(todo)))
        jobs = []
        for a, g, s in todo:
            folder = run_dir(out, budget, g, a, s)
            cmd = (
                dqnfast_command(
                    budget, g, s, folder, threads, args.device, VARIANTS.get(variant_of(a) or "", []) + args.overrides
                )
                if a.startswith("dqnfast")
                else peer_command(budget, g, s, folder, threads, args.device, peer_variant_of(a))
            )
            jobs.append((f"{a}/{g}/seed{s}", cmd, folder))
        walls = launch(jobs, parallel)

    runs = [
        collect_run(
            run_dir(out, budget, g, a, s),
            a,
            g,
            s,
            LEARNING_STARTS[budget]
            if a.startswith("dqnfast")
            else int(BUDGETS[budget]["peer"][BUDGETS[budget]["peer"].index("--learning-starts") + 1]),
            None if budget == "minatar" else SCORE_MARKS.get(g),
        )
        for a, g, s in plan
    ]
    for r in runs:
        r["wall_seconds"] = walls.get(f"{r['agent']}/{r['game']}/seed{r['seed']}")

    side_by_side = {}
    pairs = [("dqnfast", "peer", "")] + [(f"dqnfast+{v}", f"peer+{v}", f"{v}/") for v in args.peer_variants]
    for mine, theirs, prefix in pairs:
        for g in args.peer:
            for s in args.seeds:
                d = next((r for r in runs if r["agent"] == mine and r["game"] == g and r["seed"] == s), None)
                p = next((r for r in runs if r["agent"] == theirs and r["game"] == g and r["seed"] == s), None)
                if d and p and d.get("sps") and p.get("sps"):
                    side_by_side[f"{prefix}{g}/seed{s}"] = {
                        "dqnfast_sps": d["sps"],
                        "peer_sps": p["sps"],
                        "ratio": d["sps"] / p["sps"],
                        "dqnfast_learning_sps": d.get("learning_sps"),
                        "peer_learning_sps": p.get("learning_sps"),
                        "learning_ratio": (
                            d["learning_sps"] / p["learning_sps"]
                            if d.get("learning_sps") and p.get("learning_sps")
                            else None
                        ),
                    }

    failures = []
    for r in runs:
        thr = THRESHOLDS.get((budget, r["game"]))
        if r["agent"] != "dqnfast" or thr is None:
            continue
        mean = (r.get("eval") or {}).get("mean")
        r["threshold"] = thr
        if mean is None or mean < thr:
            failures.append(
                f"{r['game']} seed {r['seed']}: final evaluation "
                f"{'missing' if mean is None else f'{mean:.2f}'} < {thr} (budget {budget})"
            )

    doc = {
        "budget": budget,
        "agent_steps": BUDGETS[budget]["steps"],
        "commit": _commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "dqnfast_overrides": BUDGETS[budget]["dqnfast"] + list(args.overrides),
        "peer_flags": BUDGETS[budget]["peer"],
        "thresholds": {f"{b}/{g}": v for (b, g), v in THRESHOLDS.items() if b == budget},
        "published": PUBLISHED,
        "side_by_side": side_by_side,
        "runs": runs,
        "regressions": failures,
    }
    default_json = "learning.json" if budget == "cpu" else f"learning_{budget}.json"
    json_path = Path(args.json or _HERE / "results" / default_json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, json_path)
    plot_path = plot(doc, Path(args.plot or _REPO / "docs" / f"learning_{budget}.png"))

    for r in runs:
        ev = r.get("eval") or {}
        curve = [v for _, v in r.get("curve", []) if v is not None]
        print(
            f"learning.{budget}.{r['agent']}.{r['game']}.seed{r['seed']}: "
            f"{'finished' if r['finished'] else 'UNFINISHED'}; last score_mean "
            f"{curve[-1] if curve else float('nan'):.2f}; eval "
            f"{ev.get('mean') if ev.get('mean') is not None else float('nan'):.2f} "
            f"± {ev.get('std') or 0:.2f} over {ev.get('episodes')} games; {r.get('sps') or float('nan'):.1f} steps/s"
        )
    for k, v in side_by_side.items():
        print(
            f"learning.{budget}.side_by_side.{k}: dqnfast/peer = {v['ratio']:.2f} overall "
            f"({v['dqnfast_sps']:.1f} vs {v['peer_sps']:.1f} steps/s)"
            + (f", {v['learning_ratio']:.2f} while learning" if v.get("learning_ratio") else "")
        )
    print(f"wrote {json_path} and {plot_path}")
    if failures:
        for f in failures:
            print(f"REGRESSION: {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
