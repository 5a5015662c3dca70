"""benchmarks/learning.py: the learning-curve benchmark and its regression check.

The slow test runs the script end to end on its ``tiny`` budget (the real CLI and the peer's
CleanRL-recipe learning run, side by side), so the script cannot rot; the fast tests check the
regression threshold on run folders written by hand.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "learning.py"


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _fake_run(folder: Path, scores: list[float], eval_mean: float, sps: float = 50.0) -> None:
    folder.mkdir(parents=True)
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "score_mean", "loss", "q_mean", "time"])
        for i, s in enumerate(scores, 1):
            w.writerow([i * 100_000, s, "", "", i * 100_000 / sps])
    (folder / "eval.json").write_text(
        json.dumps({"mean": eval_mean, "std": 1.0, "episodes": 30, "scores": [eval_mean] * 30, "random": {"mean": 1.5}})
    )


@pytest.mark.parametrize("eval_mean, status", [(4.0, 1), (25.0, 0)])
def test_cpu_budget_breakout_below_threshold_fails(tmp_path, eval_mean, status):
    out = tmp_path / "runs"
    _fake_run(out / "cpu" / "Breakout" / "dqnfast_seed1", [1.7, 5.0, eval_mean], eval_mean, sps=60.0)
    _fake_run(out / "cpu" / "Breakout" / "peer_seed1", [1.7, 4.0, 9.0], 8.0, sps=40.0)
    r = _run(
        [
            "--budget",
            "cpu",
            "--games",
            "Breakout",
            "--peer",
            "Breakout",
            "--collect",
            "--out",
            str(out),
            "--json",
            str(tmp_path / "l.json"),
            "--plot",
            str(tmp_path / "l.png"),
        ],
        timeout=120,
    )
    assert r.returncode == status, r.stdout + r.stderr
    assert ("REGRESSION: Breakout seed 1" in r.stderr) == (status == 1)
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["thresholds"] == {"cpu/Breakout": 10.0}
    assert doc["side_by_side"]["Breakout/seed1"]["ratio"] == pytest.approx(60.0 / 40.0)
    dq = next(r for r in doc["runs"] if r["agent"] == "dqnfast")
    assert dq["finished"] and dq["eval"]["mean"] == eval_mean and dq["curve"][-1] == [300_000, eval_mean]
    assert dq["curve_hours"][-1] == [pytest.approx(300_000 / 60.0 / 3600), eval_mean]
    # the wall time to a training score of 20: the first row at or above it, or None
    reached = eval_mean >= 20
    assert dq["time_to_score"] == {
        "score": 20.0,
        "seconds": pytest.approx(300_000 / 60.0) if reached else None,
        "agent_steps": 300_000 if reached else None,
    }
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def test_c51_runs_are_collected_and_compared_with_the_peers_c51(tmp_path):
    """``dqnfast+c51`` pairs with ``peer+c51`` side by side; the peer's command is CleanRL's c51 recipe."""
    out = tmp_path / "runs"
    _fake_run(out / "cpu" / "Breakout" / "dqnfast+c51_seed1", [1.7, 6.0, 12.0], 12.0, sps=45.0)
    _fake_run(out / "cpu" / "Breakout" / "peer+c51_seed1", [1.7, 5.0, 11.0], 11.0, sps=30.0)
    args = ["--budget", "cpu", "--games", "Breakout", "--peer", "Breakout", "--variants", "c51"]
    args += ["--peer-variants", "c51", "--no-default", "--collect", "--out", str(out)]
    r = _run([*args, "--json", str(tmp_path / "l.json"), "--plot", str(tmp_path / "l.png")], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "l.json").read_text())
    assert sorted(x["agent"] for x in doc["runs"]) == ["dqnfast+c51", "peer+c51"]
    assert doc["side_by_side"]["c51/Breakout/seed1"]["ratio"] == pytest.approx(45.0 / 30.0)
    spec = importlib.util.spec_from_file_location("learning_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cmd = mod.peer_command("cpu", "Breakout", 1, tmp_path / "p", 1, "cpu", "c51")
    assert cmd[cmd.index("--algo") + 1] == "c51" and cmd[cmd.index("--lr") + 1] == "2.5e-4"
    assert "algo.distributional=c51" in mod.VARIANTS["c51"] and "network.noisy=true" in mod.VARIANTS["rainbow"]


def test_missing_run_is_reported_unfinished_and_fails_the_threshold(tmp_path):
    r = _run(
        [
            "--budget",
            "cpu",
            "--games",
            "Breakout",
            "--collect",
            "--out",
            str(tmp_path / "none"),
            "--json",
            str(tmp_path / "l.json"),
            "--plot",
            str(tmp_path / "l.png"),
        ],
        timeout=120,
    )
    assert r.returncode == 1
    assert "UNFINISHED" in r.stdout and "final evaluation missing < 10.0" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="the peer needs ale-py (the bench extra)")
def test_tiny_budget_runs_dqnfast_and_the_peer_side_by_side(tmp_path):
    r = _run(
        [
            "--budget",
            "tiny",
            "--games",
            "Breakout",
            "--peer",
            "Breakout",
            "--out",
            str(tmp_path / "runs"),
            "--json",
            str(tmp_path / "l.json"),
            "--plot",
            str(tmp_path / "l.png"),
        ],
        timeout=1500,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["budget"] == "tiny" and len(doc["runs"]) == 2
    for run in doc["runs"]:
        assert run["finished"], run
        assert run["curve"] and run["sps"] > 0 and run["eval"]["episodes"] >= 1
    assert doc["side_by_side"]["Breakout/seed1"]["ratio"] > 0
    assert (tmp_path / "l.png").stat().st_size > 10_000


def test_collect_finds_variant_runs_and_keeps_them_apart(tmp_path):
    """--collect reads every run folder of the budget; a variant is its own agent, not the default's seed."""
    out = tmp_path / "runs"
    _fake_run(out / "cpu" / "Breakout" / "dqnfast_seed1", [1.7, 5.0, 20.0], 20.0)
    _fake_run(out / "cpu" / "Breakout" / "dqnfast+bf16_seed2", [1.7, 1.5, 1.6], 1.4)
    (out / "cpu" / "Breakout" / "notarun_seed1").mkdir(parents=True)  # no metrics.csv: ignored
    _fake_run(out / "cpu" / "Breakout" / "dqnfast+unknown_seed1", [1.0], 1.0)  # not a known variant: ignored
    args = ["--budget", "cpu", "--games", "Breakout", "--collect", "--out", str(out)]
    r = _run(args + ["--json", str(tmp_path / "l.json"), "--plot", str(tmp_path / "l.png")], timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "l.json").read_text())
    runs = {(x["agent"], x["seed"]): x for x in doc["runs"]}
    assert set(runs) == {("dqnfast", 1), ("dqnfast+bf16", 2)}
    assert runs[("dqnfast+bf16", 2)]["eval"]["mean"] == 1.4
    assert "threshold" not in runs[("dqnfast+bf16", 2)]  # the regression check judges the default recipe only
    assert (tmp_path / "l.png").stat().st_size > 0


def test_variants_add_their_overrides_to_the_default_command():
    spec = importlib.util.spec_from_file_location("learning_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["learning_bench"] = mod
    spec.loader.exec_module(mod)
    assert mod.variant_of("dqnfast+mse") == "mse" and mod.variant_of("dqnfast") is None
    assert mod.variant_of("peer") is None
    for name, overrides in mod.VARIANTS.items():
        assert overrides and all("=" in o for o in overrides), name


def test_minatar_budget_plays_minatars_games_and_draws_their_random_agent(tmp_path):
    """``--budget minatar``: a game is its MinAtar name, played as the minatar package's Gymnasium id with
    the paper's DQN; there is no peer, no Atari reference line and no time-to-score mark."""
    spec = importlib.util.spec_from_file_location("learning_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cmd = mod.dqnfast_command("minatar", "Breakout", 1, tmp_path / "r", 1, "cpu", [])
    assert "game=gym:MinAtar/Breakout-v1" in cmd and "preset=minatar" in cmd
    assert mod.parse_args(["--budget", "minatar"]).games == list(mod.MINATAR_GAMES)

    out = tmp_path / "runs"
    for game in ("Breakout", "Freeway"):
        _fake_run(out / "minatar" / game / "dqnfast_seed1", [0.5, 3.0, 25.0], 25.0, sps=180.0)
    args = ["--budget", "minatar", "--games", "Breakout", "Freeway", "--collect", "--out", str(out)]
    r = _run([*args, "--json", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png")], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["budget"] == "minatar" and doc["thresholds"] == {}
    assert {x["game"] for x in doc["runs"]} == {"Breakout", "Freeway"}
    assert all("time_to_score" not in x and x["eval"]["random_mean"] == 1.5 for x in doc["runs"])
    assert (tmp_path / "m.png").stat().st_size > 10_000

    for bad, line in (
        (["--peer", "Breakout"], "the minatar budget has no peer"),
        (["--games", "Pong"], "--games: Pong not MinAtar's"),
    ):
        r = _run(["--budget", "minatar", *bad, "--collect", "--out", str(out)], timeout=60)
        assert r.returncode == 2 and line in r.stderr, r.stderr
