"""dqnfast.report: job collection, config labels, statistics and the written report.

A synthetic sweep (the files the Hydra launchers and dqnfast.train write, with known
scores) checks every number of the table; test_sweeps.py runs the report on real sweeps.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from dqnfast.atari_scores import human_normalized
from dqnfast.report import aggregate, collect_jobs, config_labels, iqm, iqm_ci, mean_ci, summarize, write_report

REPO = Path(__file__).resolve().parents[1]

# game -> config override -> seed -> final evaluation mean
SCORES = {
    "Pong": {"optim.lr=0.0001": [-20.0, -18.0, -19.0], "optim.lr=0.001": [-5.0, 0.0, 2.0]},
    "Breakout": {"optim.lr=0.0001": [5.0, 8.0, 11.0], "optim.lr=0.001": [30.0, 36.0, 24.0]},
}


def make_job(d, overrides, *, game, seed, score=None, steps=(1000, 2000, 3000), start=0.0):
    """A run dir as dqnfast.train writes it under a Hydra multirun."""
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"game": game, "seed": seed}))
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env_steps", "score_mean", "loss"])
        w.writerow([steps[0], "nan", "nan"])  # no game finished yet
        for i, s in enumerate(steps[1:]):
            w.writerow([s, start + i + seed, 0.1])
    if score is not None:
        (d / "eval.json").write_text(
            json.dumps(
                {
                    "scores": [score - 1, score + 1],
                    "mean": score,
                    "median": score,
                    "game": f"{game}-v5",
                    "env_steps": steps[-1],
                }
            )
        )


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    n = 0
    for game, configs in SCORES.items():
        for config, scores in configs.items():
            for seed, score in enumerate(scores):
                make_job(
                    root / str(n),
                    [f"game={game}", config, f"seed={seed}", "preset=quick"],
                    game=game,
                    seed=seed,
                    score=score,
                )
                n += 1
    # a job that has not finished: listed, not scored
    make_job(root / str(n), ["game=Pong", "optim.lr=0.001", "seed=3", "preset=quick"], game="Pong", seed=3)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_config_labels_keep_only_what_differs_besides_seed_and_game():
    labels = config_labels(
        [
            ["game=Pong", "seed=0", "preset=quick", "optim.lr=0.1"],
            ["game=Breakout", "seed=1", "preset=quick", "optim.lr=0.2", "+network.dueling=true"],
            ["game=Pong", "seed=2", "preset=quick", "optim.lr=0.1"],
        ]
    )
    assert labels == ["optim.lr=0.1", "network.dueling=true optim.lr=0.2", "optim.lr=0.1"]
    assert config_labels([["seed=0", "a=1"], ["seed=1", "a=1"]]) == ["default", "default"]


def test_mean_ci_is_students_t_interval_over_seeds():
    x = [1.0, 2.0, 4.0]
    m, sd, lo, hi = mean_ci(x)
    assert m == pytest.approx(7 / 3) and sd == pytest.approx(np.std(x, ddof=1))
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert (lo, hi) == pytest.approx((m - half, m + half))
    assert mean_ci([3.0])[:2] == (3.0, 0.0) and math.isnan(mean_ci([3.0])[2])
    assert mean_ci([2.0, 2.0]) == (2.0, 0.0, 2.0, 2.0)
    assert all(math.isnan(v) for v in mean_ci([]))


def test_iqm_and_its_stratified_bootstrap_ci():
    assert iqm(np.arange(8.0)) == pytest.approx(np.mean([2, 3, 4, 5]))
    per_game = [[0.1, 0.2, 0.3, 0.25], [1.0, 1.2, 0.9, 1.1], [0.5, 0.6, 0.55, 0.4]]
    point, lo, hi = iqm_ci(per_game, reps=500, seed=1)
    assert point == pytest.approx(iqm(np.concatenate(per_game)))
    assert lo <= point <= hi and hi - lo > 0
    assert iqm_ci(per_game, reps=500, seed=1) == (point, lo, hi)  # seeded: reproducible
    # one run per game: nothing to resample within a game
    p1, lo1, hi1 = iqm_ci([[0.3], [0.5]])
    assert p1 == pytest.approx(0.4) and math.isnan(lo1) and math.isnan(hi1)


def test_summary_rows_and_across_game_aggregates(sweep):
    jobs = collect_jobs([sweep])
    assert len(jobs) == 13 and [j.path.name for j in jobs] == [str(i) for i in range(13)]
    assert {j.config for j in jobs} == {"optim.lr=0.0001", "optim.lr=0.001"}
    assert jobs[-1].status == "no eval.json" and jobs[0].status == "done"
    rows = summarize(jobs)
    assert [(r.game, r.config, r.n) for r in rows] == [
        ("Pong", "optim.lr=0.0001", 3),
        ("Pong", "optim.lr=0.001", 3),
        ("Breakout", "optim.lr=0.0001", 3),
        ("Breakout", "optim.lr=0.001", 3),
    ]
    for r in rows:
        scores = SCORES[r.game][r.config]
        m, sd, lo, hi = mean_ci(scores)
        assert (r.mean, r.std, r.ci_low, r.ci_high) == pytest.approx((m, sd, lo, hi))
        assert r.seeds == [0, 1, 2] and r.env_steps == 3000
        assert r.hns == pytest.approx(np.mean([human_normalized(r.game, s) for s in scores]))
    assert len(rows[1].jobs) == 4  # the unfinished job belongs to its row but is not scored
    aggs = {a.config: a for a in aggregate(rows, reps=300)}
    a = aggs["optim.lr=0.001"]
    hns = [human_normalized(g, s) for g in SCORES for s in SCORES[g]["optim.lr=0.001"]]
    assert a.games == ["Pong", "Breakout"] and a.runs == 6
    assert a.iqm == pytest.approx(iqm(np.array(hns))) and a.ci_low <= a.iqm <= a.ci_high
    assert aggs["optim.lr=0.0001"].iqm < a.iqm


def make_eval_dir(d, run, overrides):
    """An output folder as ``python -m dqnfast.evaluate`` writes it (Hydra's files included)."""
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"run": str(run), "episodes": 10, "game": None}))
    (d / "evaluate.log").write_text("")


def test_evaluation_folders_inside_jobs_are_not_jobs(sweep):
    before = collect_jobs([sweep])
    job0 = sweep / "0"
    make_eval_dir(job0 / "eval", job0, [f"run={job0}", "video=true"])
    make_eval_dir(job0 / "eval-step_000000060000", job0, [f"run={job0}/checkpoints/x.pt", "episodes=10"])
    after = collect_jobs([sweep])
    assert [j.path for j in after] == [j.path for j in before]
    assert [j.config for j in after] == [j.config for j in before]
    assert collect_jobs([job0 / "eval"]) == []


def test_write_report_files(sweep, tmp_path):
    out = tmp_path / "report"
    paths = write_report([sweep], out, reps=200)
    md = paths["md"].read_text()
    assert "## Scores" in md and "## Across games (human-normalized)" in md and "![learning curves](report.png)" in md
    assert "| Breakout | `optim.lr=0.001` | 0, 1, 2 | 30.00 ± 6.00 |" in md
    assert "(+1 unfinished)" in md and "no eval.json" in md
    rows = list(csv.DictReader(open(paths["csv"])))
    assert len(rows) == 4 and rows[0]["game"] == "Pong" and float(rows[3]["mean"]) == pytest.approx(30.0)
    import matplotlib.image

    img = matplotlib.image.imread(str(paths["png"]))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 500


def test_a_failed_rewrite_leaves_the_previous_report_whole(sweep, tmp_path, monkeypatch):
    import dqnfast.report as report

    out = tmp_path / "rep"
    write_report([sweep], out, reps=50)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_plot(rows, f):
        f.write(b"half a png")
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report, "plot_curves", broken_plot)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report([sweep], out, reps=50)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file, nothing half-written


def test_optuna_results_section(sweep):
    (sweep / "optimization_results.yaml").write_text(
        yaml.safe_dump({"name": "optuna", "best_params": {"optim.lr": 0.001}, "best_value": 33.0})
    )
    md = write_report([sweep], reps=100)["md"].read_text()
    assert "## Optuna: best trial" in md and "**33.00**" in md and "- `optim.lr=0.001`" in md


def test_cli(sweep, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dqnfast.report", str(sweep), "--reps", "100"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (sweep / "report.md").exists() and (sweep / "report.png").exists() and "wrote" in proc.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "dqnfast.report", str(empty)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert (
        proc.returncode == 2
        and proc.stderr.startswith("error: no Hydra jobs")
        and len(proc.stderr.strip().splitlines()) == 1
    )
