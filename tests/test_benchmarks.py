"""Smoke tests of the benchmark scripts: they run, print ``NAME = value unit`` lines and save JSON.

Nothing here asserts on time: figures only have to exist and be positive. ``fps.py --quick``
runs every stage (env, actor, replay, learner, e2e through the real CLI, peer) in about a
minute on two CPU cores, each stage in a fresh process: that is in the slow suite, and the
default run has the env and learner stages (the orchestration, printing and JSON every stage
shares); the replay stage is ``replay.py``, run below, and the e2e stage the CLI of the
training tests. ``replay.py --quick`` runs one contender of each kind, at one thread and batch
256, by default, and every contender in the slow suite.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
METRIC_LINE = re.compile(r"^(fps\.[A-Za-z0-9_]+) = (\S+) (\S+)$", re.MULTILINE)


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(BENCH))
    return mod


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _fps_quick(tmp_path, stages: list[str]) -> tuple[dict, dict, str]:
    """Runs ``fps.py --quick`` over ``stages`` and checks what every stage promises: each
    expected ``NAME = value unit`` line printed with a finite, positive figure, the summary
    table, and the JSON holding exactly the printed figures and no stage error. Returns the
    printed lines, the JSON and stdout."""
    out = tmp_path / "fps.json"
    r = _run([str(BENCH / "fps.py"), "--quick", "--stage", ",".join(stages), "--out", str(out)], timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    lines = {m.group(1): (m.group(2), m.group(3)) for m in METRIC_LINE.finditer(r.stdout)}
    expected = {
        "env": ["fps.env_sync_n8", "fps.env_sync_n8_frames", "fps.env_async_n8_b4"],
        "actor": ["fps.actor_sync_n8", "fps.actor_sync_n8_vs_env"],
        "replay": ["fps.replay_sample_B256", "fps.replay_sample_B256_vs_memcpy"],
        "learner": ["fps.learner_B32_eager_fp32", "fps.learner_B32_eager_bf16"],
        "e2e": ["fps.e2e_nature", "fps.e2e_nature_bound", "fps.e2e_nature_vs_bound"],
        "peer": ["fps.peer", "fps.e2e_nature_vs_peer"],
    }
    for name in [n for stage in stages for n in expected[stage]]:
        assert name in lines, f"{name} not printed; got {sorted(lines)}"
        value = float(lines[name][0])
        assert math.isfinite(value) and value > 0, (name, lines[name])
    assert "ratio" in r.stdout  # the summary table

    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "fps"
    assert doc["machine"]["cpu_model"] and doc["machine"]["cores"] >= 1
    assert set(doc["stages"]) >= set(stages)
    assert not any(s["error"] for s in doc["stages"].values()), doc["stages"]
    assert set(doc["metrics"]) == set(lines)  # every printed line is saved, and only those
    return lines, doc, r.stdout


def test_fps_quick_runs_the_env_and_learner_stages(tmp_path):
    lines, _, _ = _fps_quick(tmp_path, ["env", "learner"])
    assert lines["fps.env_sync_n8"][1] == "steps/s" and lines["fps.env_sync_n8_frames"][1] == "frames/s"
    assert lines["fps.learner_B32_eager_fp32"][1] == "updates/s"


@pytest.mark.slow
def test_fps_quick_runs_every_stage(tmp_path):
    have_peer = importlib.util.find_spec("ale_py") is not None
    stages = ["env", "actor", "replay", "learner", "e2e"] + (["peer"] if have_peer else [])
    _, doc, stdout = _fps_quick(tmp_path, stages)
    assert "targets" in stdout  # the speed targets, judged from the actor and e2e stages
    e2e = [row for row in doc["results"] if row["stage"] == "e2e"]
    assert e2e and e2e[0]["updates_per_step"] == pytest.approx(0.25)  # the Nature ratio: 1 update / 4 steps


# Each contender of replay.py runs in a process of its own: the default run takes one of each kind
# (dqnfast's ring, its NumPy reference, memcpy, stable-baselines3's buffer, a prioritized ring);
# the slow suite runs them all.
REPLAY_DEFAULT = ["--threads", "1", "--batch-sizes", "256", "--skip", "sb3-optmem,sb3-optmem-dm,numpy-per,cpprb-per"]


@pytest.mark.parametrize("extra", [REPLAY_DEFAULT, pytest.param([], marks=pytest.mark.slow)], ids=["some", "all"])
def test_replay_quick_runs(tmp_path, extra):
    script = BENCH / "replay.py"
    if not script.exists():
        pytest.skip("benchmarks/replay.py not present")
    pytest.importorskip("stable_baselines3", reason="it compares with stable-baselines3: pip install -e '.[test]'")
    out = tmp_path / "replay.json"
    r = _run([str(script), "--quick", *extra, "--out", str(out)], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"^replay\.sample_B256_threads1 = \d+ samples/s$", r.stdout, re.MULTILINE)
    assert json.loads(out.read_text())["benchmark"] == "replay"


def test_fps_rejects_unknown_stage():
    r = _run([str(BENCH / "fps.py"), "--stage", "env,warp"], timeout=60)
    assert r.returncode == 2 and "unknown stage" in r.stderr


def test_fps_plan_measures_the_bounds_it_compares_with():
    fps = _load("fps")
    args = fps.parse_args(["--stage", "actor,e2e", "--quick", "--e2e", "nature,fast"])
    p = fps.plan(args, "cpu")
    cores = args.cores
    # the actor's rows and both e2e settings' env ceilings are measured, as bounds only
    assert p["bound_only"]["env"] and p["bound_only"]["learner"]
    for n, b, _ in p["actor"]:
        assert (n, b, min(max(args.threads), n)) in p["env"]
    assert (8, 8, min(cores, 8)) in p["env"] and (64, 32, min(cores, 64)) in p["env"]
    # learner: what dqnfast.train runs on this device at each setting's batch size
    assert (32, "eager-fp32") in p["learner"] and (256, "eager-fp32") in p["learner"]
    assert [s["replay_ratio"] for s in p["e2e"]] == [8.0, 8.0]
    # CUDA graphs are skipped (with a note) off CUDA; on CUDA the default run compiles
    full = fps.parse_args(["--stage", "learner"])
    assert all(not v.startswith("graphs") for _, v in fps.plan(full, "cpu")["learner"])
    assert {v for _, v in fps.plan(full, "cuda")["learner"]} >= {"compile-fp32", "graphs-fp32", "graphs-bf16"}
    fast = next(s for s in fps.plan(fps.parse_args(["--stage", "e2e"]), "cuda")["e2e"] if s["name"] == "fast")
    assert fast["learner_variant"] == "graphs-fp32" and fast["batch_size"] == 256  # auto = reduce-overhead on CUDA


def test_peer_resize_standin_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    if getattr(cv2, "__dqnfast_standin__", False):
        pytest.skip("OpenCV not installed")
    peer = _load("peer_dqn")
    saved = sys.modules.get("cv2")
    try:
        peer.install_cv2_standin()
        standin = sys.modules["cv2"]
    finally:
        sys.modules["cv2"] = saved
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (210, 160)).astype(np.uint8)
    img[50:120, 30:40] = 236  # a flat block with edges, as Atari frames have
    ours = standin.resize(img, (84, 84), interpolation=standin.INTER_AREA)
    ref = cv2.resize(img, (84, 84), interpolation=cv2.INTER_AREA)
    assert ours.shape == ref.shape == (84, 84) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_the_peers_envpool_emulator_ends_lives_and_games_as_cleanrls_wrappers_do():
    """A life loss ends the episode and the game goes on; only a game over reports a whole game's (unclipped) score."""
    peer = _load("peer_dqn")
    env = peer.EnvpoolAsGym("Breakout", seed=3, train=True)
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    episodes, games, clipped = 0, [], 0.0
    while len(games) < 2:
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        assert reward in (0.0, 1.0)  # clipped in training
        clipped += reward
        if "episode" in info:
            games.append(info["episode"]["r"])
        if terminated or truncated:
            episodes += 1
            obs, _ = env.reset()
    env.close()
    assert episodes == 10  # Breakout's 5 lives: five episodes a game
    assert sum(games) >= clipped  # a brick is worth 1, 4 or 7 points; the clipped reward 1


@pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None, reason="the peer's pipeline needs ale-py (the bench extra)"
)
def test_cross_eval_plays_both_networks_in_both_pipelines_on_the_same_seeds(tmp_path, capsys):
    import dataclasses

    import torch

    from dqnfast.agent.networks import NatureCNN, make_network, spec_for
    from dqnfast.checkpoint import write_checkpoint
    from dqnfast.config import Config

    torch.manual_seed(0)
    spec = spec_for("auto", "pixels", (4, 84, 84), "uint8", 4, cnn_hidden=32)
    net = make_network(spec)
    ck = write_checkpoint(
        tmp_path / "run" / "checkpoint.pt",
        {
            "online": net.state_dict(),
            "target": net.state_dict(),
            "optimizer": {},
            "counters": {"env_steps": 100, "frames": 400, "updates": 1, "episodes": 0, "seed": 1},
            "config": dataclasses.asdict(Config(game="Breakout", seed=1)),
            "game": "Breakout-v5",
            "obs": {"kind": "pixels", "shape": [4, 84, 84], "dtype": "uint8"},
            "num_actions": 4,
            "network": spec.to_dict(),
        },
    )
    torch.save(NatureCNN(4, 4).state_dict(), tmp_path / "q_net.pt")
    torch.save(NatureCNN(4, 4 * 51).state_dict(), tmp_path / "c51_q_net.pt")  # peer_dqn.py --algo c51's
    cross = _load("cross_eval")
    for peer in ("q_net.pt", "c51_q_net.pt"):
        out = tmp_path / f"{peer}.json"
        argv = ["--dqnfast", str(ck.parent), "--peer", str(tmp_path / peer), "--games", "2", "--epsilons", "0.5"]
        assert cross.main([*argv, "--max-episode-steps", "40", "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert sorted(doc["results"]) == [
            f"{w} {p} eps0.5" for w in ("dqnfast", "peer") for p in ("cleanrl", "envpool")
        ]
        for r in doc["results"].values():
            assert len(r["scores"]) == 2 and all(s >= 0 for s in r["scores"])
    assert "cross_eval.peer.cleanrl.eps0.5 = " in capsys.readouterr().out
    torch.save(NatureCNN(4, 6).state_dict(), tmp_path / "pong.pt")  # a network for another game
    with pytest.raises(SystemExit, match="not a network for 4 actions"):
        cross.main(["--dqnfast", str(ck.parent), "--peer", str(tmp_path / "pong.pt")])
    for bad in (["--peer", str(tmp_path / "missing.pt")], ["--games", "0"], ["--epsilons", "2"]):
        with pytest.raises(SystemExit) as refused:
            cross.main(["--dqnfast", str(ck.parent), "--peer", str(tmp_path / "q_net.pt"), *bad])
        assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--peer: no file" in err and "--games must be >= 1" in err and "--epsilons must be in [0, 1]" in err


def test_dqnfasts_c51_update_is_the_peers_c51_maths_on_the_same_weights_and_batches():
    """dqnfast's c51_update_step and the peer's C51 (CleanRL's c51_atari.py maths) agree step for step: a
    gap between the two C51 runs lies elsewhere (env count, emulator wrappers), not in the loss."""
    rows = _load("c51_maths").same_update(steps=2, batch=8)
    for row in rows:
        assert row["loss_dqnfast"] == pytest.approx(row["loss_peer"], rel=1e-6)
        assert row["max_param_gap"] < 1e-6  # Adam moves each weight by ~2.5e-4 a step


def test_roofline_counts_the_updates_flops_and_saves_its_figures(tmp_path):
    """The FLOP count is exact arithmetic (no timing): the Nature CNN at B=32 does about 18.7 MFLOP per
    sample forward; an update runs three forwards (online on obs and next_obs, target on next_obs) and one
    backward (twice a forward, less conv1's input gradient): 2.78 GFLOP."""
    roofline = _load("roofline")
    flops = roofline.update_flops(32)
    assert 2.7e9 < flops < 2.85e9, flops
    out = tmp_path / "cpu_throughput.json"
    out.write_text(json.dumps({"ratio_alone": 1.25}))  # the file's other keys are kept
    r = _run([str(BENCH / "roofline.py"), "--quick", "--threads", "1", "--no-compile", "--json", str(out)], timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["ratio_alone"] == 1.25
    row = doc["roofline"]["rows"][0]
    assert row["flops_per_update"] == flops
    assert row["eager"]["gflops"] > 0 and 0 < row["eager"]["fraction_of_gemm"]
    assert set(row["parts_ms"]) >= {"fwd_bwd_fp32", "fwd_bwd_fp32_channels_last", "fwd_nograd_bf16"}
    assert set(row["parts_ms"]) >= {"adam_step_loop", "adam_step_foreach", "adam_step_fused"}
    assert set(row["updates_ms"]) == set(roofline.UPDATE_VARIANTS) and min(row["updates_ms"].values()) > 0
    assert doc["roofline"]["machine"]["cpu_model"]


def test_cpu_defaults_rounds_give_each_setting_its_median_ratio_to_each_rounds_baseline():
    cpu_defaults = _load("cpu_defaults")
    runs = [
        {"setting": "b", "sps_median": 30.0, "vs_baseline": 1.5},
        {"setting": "b", "sps_median": 10.0, "vs_baseline": 0.5},
        {"setting": "b", "sps_median": 50.0, "vs_baseline": 1.25},
        {"setting": "b", "error": "failed"},
    ]
    got = cpu_defaults._combine(runs)
    assert got["setting"] == "b" and got["sps_median"] == 30.0 and got["vs_baseline"] == 1.25
    assert got["vs_baseline_each_round"] == [1.5, 0.5, 1.25] and got["rounds"] == runs


def test_cpu_defaults_runs_the_peer_alone_with_the_same_budget_and_dqnfast_with_its_defaults(tmp_path):
    cpu_defaults = _load("cpu_defaults")
    args = cpu_defaults.parse_args(["--steps", "300", "--learning-starts", "100", "--low-epsilon"])
    peer = cpu_defaults._command(args, "peer --torch-threads 1", tmp_path)
    assert peer[1].endswith("peer_dqn.py") and "--learn" in peer
    joined = " ".join(peer)
    assert "--learning-starts 100" in joined and "--total-steps 400" in joined
    assert "--exploration-steps 100" in joined and peer[-2:] == ["--torch-threads", "1"]
    mine = cpu_defaults._command(args, "default", tmp_path)
    assert mine[1:3] == ["-m", "dqnfast.train"] and "default" not in mine
    assert "explore.decay_steps=1" in mine and "algo.total_steps=400" in mine


def test_loop_profile_times_every_part_of_the_real_loops_step(tmp_path):
    out = tmp_path / "lp.json"
    r = _run(
        [
            str(BENCH / "loop_profile.py"),
            "--steps",
            "96",
            "--learning-starts",
            "64",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["threads"] == 1 and row["updates"] > 0 and row["loop_steps"] > 0
    ms = row["ms_per_step"]
    assert all(ms[k] > 0 for k in ("recv", "add", "act", "send", "sample", "update", "step"))
    assert ms["update"] < ms["step"]
