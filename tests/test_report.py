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
    m1, *undefined = mean_ci([3.0])  # one seed: no sample std, no interval
    assert m1 == 3.0 and all(math.isnan(v) for v in undefined)
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
    from dqnfast.report import write as report

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


# ------------------------------------------------------ failed, missing and bad jobs
def run_report(*dirs: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dqnfast.report", *map(str, dirs), "--reps", "50"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_failed_and_never_run_jobs_are_listed_beside_the_others_results(sweep):
    """A failed job (its failed.json) and the jobs of the sweep's plan that left no folder are listed."""
    from dqnfast.failure import write_failure

    write_failure(sweep / "12", "training diverged at agent step 3000: lower optim.lr (now 1e+20)", 1)
    plan = {  # what Hydra's basic sweeper writes before it launches the first job
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["game=Pong,Breakout", "optim.lr=0.0001,0.001", "seed=0,1,2,3", "preset=quick"]},
    }
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": plan}))
    proc = run_report(sweep)
    assert proc.returncode == 0, proc.stderr
    md = (sweep / "report.md").read_text()
    assert "16 jobs (12 with a final evaluation, 1 failed, 3 never ran)" in md
    assert "| Pong | `optim.lr=0.001` | 0, 1, 2 (+1 failed) | -1.00 ± 3.61 |" in md  # the others' scores stand
    assert "| failed (exit 1): training diverged at agent step 3000: lower optim.lr (now 1e+20) |" in md
    never = [line for line in md.splitlines() if "never ran" in line and line.startswith("| `")]
    assert [line.split(" | ")[2] for line in never] == ["`optim.lr=0.0001`", "`optim.lr=0.0001`", "`optim.lr=0.001`"]
    assert "failed: " in proc.stdout and proc.stdout.count("never ran: job ") == 3
    # a later run in that folder that finishes (a resume) supersedes the record
    (sweep / "12" / "eval.json").write_text(json.dumps({"mean": 3.0, "scores": [2.0, 4.0], "game": "Pong-v5"}))
    assert [j.status for j in collect_jobs([sweep])][12] == "done"


def test_one_bad_job_is_named_and_skipped_never_the_end_of_the_report(sweep):
    """Binary, truncated or mistyped files in one job: that job is named and skipped, the others reported."""
    bad = {
        "13": ("metrics.csv", b"\x89PNG\r\n\x1a\n\xff\xfe binary"),
        "14": ("eval.json", b"\xff\xd8\xff\xe0 binary"),
        "15": ("eval.json", b"[1, 2, 3]"),
        "16": (".hydra/overrides.yaml", b"- game=Pong\n- [unclosed\n"),
        "17": (".hydra/config.yaml", b"game: [Pong\n"),
    }
    for name, (file, data) in bad.items():
        make_job(sweep / name, ["game=Pong", "optim.lr=0.001", f"seed={name}", "preset=quick"], game="Pong", seed=0)
        (sweep / name / "eval.json").write_text(json.dumps({"mean": 1.0, "scores": [1.0], "game": "Pong-v5"}))
        (sweep / name / file).write_bytes(data)
    # a metrics.csv whose last line was cut while it was written: its numbers are left out, and said so
    make_job(sweep / "18", ["game=Breakout", "optim.lr=0.001", "seed=9", "preset=quick"], game="Breakout", seed=9)
    with open(sweep / "18" / "metrics.csv", "a") as f:
        f.write("4000,1")  # the row was to be 4000,12.5,0.1
    proc = run_report(sweep)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 5 and all(w.startswith("warning: skipped ") for w in warnings), warnings
    md = (sweep / "report.md").read_text()
    reasons = {
        "13": "metrics.csv is not UTF-8 text",
        "14": "eval.json is not UTF-8 text",
        "15": "eval.json holds a JSON list, not an object",
        "16": ".hydra/overrides.yaml is not valid YAML (ParserError)",
        "17": ".hydra/config.yaml is not valid YAML (ParserError)",
    }
    for name, reason in reasons.items():
        assert f"- `{name}`: {reason}" in md and any(w.endswith(f"{name}: {reason}") for w in warnings)
    assert "| Breakout | `optim.lr=0.001` | 0, 1, 2 (+1 unfinished) | 30.00 ± 6.00 |" in md
    (job18,) = [j for j in collect_jobs([sweep]) if j.path.name == "18"]
    assert job18.train_score == 10.0 and job18.env_steps == 3000  # the last whole row (3000, 1 + seed)
    assert "metrics.csv's last line is cut (left out)" in md


def test_report_escapes_every_value_it_shows(tmp_path):
    """A game name with HTML and a pipe, overrides with backticks and pipes: literal text in every renderer."""
    markdown = pytest.importorskip("markdown")  # Python-Markdown renders MkDocs sites
    root = tmp_path / "sweep"
    game = "<img src=x onerror=alert(1)>|pipe"
    make_job(root / "0", ["exp_name=a`b", "seed=0"], game="CartPole", seed=0, score=5.0)
    make_job(root / "1", ["exp_name=x|y", "seed=0"], game="CartPole", seed=0, score=7.0)
    ev = json.loads((root / "0" / "eval.json").read_text())
    (root / "0" / "eval.json").write_text(json.dumps({**ev, "game": game}))
    md = write_report([root], reps=50)["md"].read_text()
    html = markdown.markdown(md, extensions=["tables"])
    assert "<img src=x" not in html  # no live tag: the name is text
    assert "&lt;img src=x onerror=alert(1)&gt;|pipe" in html
    assert "<code>exp_name=a`b</code>" in html and "exp_name=x|y" in html
    table = html.split("<h2>Scores</h2>")[1].split("</table>")[0]
    assert table.count("<tr>") == 3 and all(r.count("<td>") == 8 for r in table.split("<tr>")[2:])
    jobs = html.split("<h2>Jobs</h2>")[1].split("</table>")[0]
    assert jobs.count("<tr>") == 3 and all(r.count("<td>") == 7 for r in jobs.split("<tr>")[2:])
    # one seed: its mean, and no standard deviation (a sample std of one value is undefined)
    assert "| 5.00 (n=1) |" in md and "± 0.00" not in md


def test_the_legend_of_many_configs_stays_readable(tmp_path):
    """200 configs in one panel: the legend names the best few, says how many it leaves out, fits the figure."""
    from dqnfast.report import LEGEND_MAX, Job, curves_figure

    curve = np.array([[1000.0, 1.0], [2000.0, 2.0]])
    jobs = [
        Job(tmp_path / str(i), [f"optim.lr={i}e-5", "seed=0"], "CartPole", 0, None, curve + [0, i], 2000)
        for i in range(200)
    ]
    for j, label in zip(jobs, config_labels([j.overrides for j in jobs])):
        j.config = label
    fig = curves_figure(summarize(jobs))
    fig.canvas.draw()
    (ax,) = [a for a in fig.axes if a.get_visible()]
    legend = ax.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == LEGEND_MAX + 1 and texts[-1].startswith(f"+{200 - LEGEND_MAX} more configs")
    assert texts[0] == "optim.lr=190e-5 (n=1)"  # the best last scores, in the table's order
    box, page = legend.get_window_extent(), fig.bbox
    assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
