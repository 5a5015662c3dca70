"""dqnfast.loggers: metrics.csv, console lines, W&B (offline, read back from its run log) and TensorBoard.

W&B runs are real offline runs: their ``run-<id>.wandb`` record log is read back with
``read_wandb_run`` below (wandb 0.31 ships no Python reader for it: the format is LevelDB's
log format of ``wandb_internal_pb2.Record`` protobufs, the one ``wandb sync`` uploads).
HOME points to tmp_path so no real W&B credentials or settings are ever seen.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import socket
import struct
import time
from pathlib import Path

import pytest

from dqnfast.config import Config, ConfigError, LoggerConfig, validate
from dqnfast.loggers import (
    METRIC_COLUMNS,
    METRIC_KEYS,
    CsvLogger,
    RunInfo,
    RunLoggers,
    choose_wandb_mode,
    eval_media,
    eval_scalars,
)


def row(step: int, score: float = 1.0) -> dict:
    return dict(
        env_steps=step,
        frames=4 * step,
        episodes=step // 100,
        score_mean=score,
        score_median=score,
        episode_length_mean=10.0,
        loss=0.5,
        q_mean=1.5,
        epsilon=0.1,
        sps=1000.0,
        time=step / 1000,
        updates=step // 4,
        grad_norm=2.0,
        grad_norm_max=3.0,
    )


# ------------------------------------------------------------ W&B's run log
def read_wandb_run(run_dir: Path, timeout: float = 20.0) -> dict:
    """The offline W&B run under ``run_dir/wandb``: {"history": [...], "run": RunRecord, "metrics",
    "artifacts", "exit_code"}. History rows map keys to decoded JSON values.

    wandb's writer process can still be flushing the file when ``wandb.finish`` returns (seen
    about once in five runs), so this reads until the run's exit record, written last, is there.
    """
    deadline = time.monotonic() + timeout
    while True:
        out = _parse_wandb_file(run_dir)
        if out["exit_code"] is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _parse_wandb_file(run_dir: Path) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    block, pos, chunks, buf = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and n == 0:  # zero padding up to the next block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 1:  # FULL
            chunks.append(chunk)
        elif kind == 2:  # FIRST
            buf = chunk
        elif kind == 3:  # MIDDLE
            buf += chunk
        elif kind == 4:  # LAST
            chunks.append(buf + chunk)
    out = {"history": [], "run": None, "metrics": {}, "artifacts": [], "exit_code": None, "summary": {}}
    for raw in chunks:
        rec = pb.Record.FromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            )
        elif kind == "run":
            out["run"] = rec.run
        elif kind == "metric":
            out["metrics"][rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
        elif kind == "summary":
            for i in rec.summary.update:
                out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return out


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    """A HOME without W&B settings or .netrc, no WANDB_* variables, a fresh wandb singleton."""
    wandb = pytest.importorskip("wandb")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    for var in (
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_MODE",
        "WANDB_BASE_URL",
        "WANDB_DIR",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "WANDB_RUN_GROUP",
        "WANDB_TAGS",
        "WANDB_CONFIG_DIR",
    ):
        monkeypatch.delenv(var, raising=False)
    wandb.teardown()
    yield wandb
    wandb.teardown()


# ------------------------------------------------------------------- config
def test_logger_config_checks():
    cfg = Config()
    cfg.logger.wandb_mode = "sometimes"
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert e.value.key == "logger.wandb_mode"
    cfg = Config()
    cfg.logger.wandb_tags = ["ok", ""]
    with pytest.raises(ConfigError, match="logger.wandb_tags"):
        validate(cfg)


# ---------------------------------------------------------------- CSV, console
def test_csv_rows_are_flushed_at_once_and_resume_keeps_earlier_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLogger(path)
    log.log_metrics(row(100))
    rows = list(csv.DictReader(open(path)))  # readable while the run goes on
    assert list(rows[0]) == list(METRIC_COLUMNS) and rows[0]["env_steps"] == "100"
    for s in (200, 300):
        log.log_metrics(row(s))
    log.close()
    log = CsvLogger(path, resume_step=200)  # the checkpoint was at 200: row 300 is redone
    log.log_metrics(row(300, score=7.0))
    log.close()
    rows = list(csv.DictReader(open(path)))
    assert [r["env_steps"] for r in rows] == ["100", "200", "300"] and rows[-1]["score_mean"] == "7.0"


def test_csv_resume_of_a_file_with_other_columns_rewrites_its_header(tmp_path):
    # A run started by a version that wrote fewer columns: appended rows must not shift under
    # the old header; the old rows keep their values and get empty cells for the new columns.
    path = tmp_path / "metrics.csv"
    old_columns = [c for c in METRIC_COLUMNS if not c.startswith("grad_norm")]
    log = CsvLogger(path, columns=old_columns)
    for s in (100, 200):
        log.log_metrics(row(s))
    log.close()
    log = CsvLogger(path, resume_step=200)
    log.log_metrics(row(300))
    log.close()
    rows = list(csv.DictReader(open(path)))
    assert all(list(r) == list(METRIC_COLUMNS) for r in rows)
    assert [r["env_steps"] for r in rows] == ["100", "200", "300"] and rows[0]["loss"] == "0.5"
    assert [r["grad_norm"] for r in rows] == ["", "", "2.0"] and rows[2]["grad_norm_max"] == "3.0"


def test_csv_leaves_loss_and_q_mean_empty_before_learning(tmp_path):
    path = tmp_path / "metrics.csv"
    log = CsvLogger(path)
    before = {"loss": math.nan, "q_mean": math.nan, "grad_norm": math.nan, "grad_norm_max": math.nan, "updates": 0}
    log.log_metrics({**row(100), **before})
    log.log_metrics(row(200))
    log.close()
    rows = list(csv.DictReader(open(path)))
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert {rows[0][k] for k in ("loss", "q_mean", "grad_norm", "grad_norm_max")} == {""} and rows[1]["loss"] == "0.5"
    assert "nan" not in path.read_text()


def test_progress_bar_fields_one_speed_a_phase_and_no_nan():
    from dqnfast.loggers.console import ConsoleLogger

    console = ConsoleLogger(total_steps=1000, progress=True)
    try:
        random_play = {**row(100), "score_mean": math.nan, "loss": math.nan, "q_mean": math.nan}
        random_play.update(epsilon=0.9995, updates=0)
        console.log_metrics(random_play)
        fields = console.bar.postfix
        assert "sps" not in fields and "nan" not in fields  # tqdm's step/s is the one speed
        assert "phase=random play" in fields and "eps=0.9995" in fields and "loss" not in fields
        console.log_metrics(row(500))
        fields = console.bar.postfix
        assert "phase=learning" in fields and "loss=0.5" in fields and "eps=0.1" in fields
        assert "score=1.0" in fields and "sps" not in fields
    finally:
        console.close()


def test_progress_bar_shows_a_resume_refill():
    from dqnfast.loggers.console import ConsoleLogger

    console = ConsoleLogger(total_steps=1000, progress=True, initial=500)
    try:
        console.refill(250, 1000)
        assert "phase=refilling replay 250/1000" in console.bar.postfix
    finally:
        console.close()


def test_time_left_counts_the_warm_up_and_the_learning_at_their_own_speeds():
    from dqnfast.loggers.console import time_left

    # the default Atari run on a CPU: 10M agent steps, 50k of random play at 658/s, then about 60/s
    at = dict(learning_starts=50_000, random_sps=658.0, learning_sps=60.0)
    left = time_left(10_000, 10_000_000, **at)
    assert left == pytest.approx(40_000 / 658 + 9_950_000 / 60) and 46 * 3600 < left < 46.2 * 3600
    assert time_left(2_000_000, 10_000_000, **at) == pytest.approx(8_000_000 / 60)  # learning only
    assert time_left(10_000, 10_000_000, **{**at, "learning_sps": None}) is None  # not known: not guessed
    assert time_left(60_000, 60_000, **{**at, "learning_sps": None}) == 0.0  # nothing left
    assert time_left(100, 500, learning_starts=1000, random_sps=50.0, learning_sps=None) == 8.0  # ends in warm-up
    assert time_left(0, 1000, learning_starts=0, random_sps=None, learning_sps=100.0) == 10.0  # REINFORCE


def test_the_bar_estimates_learning_from_the_start_up_figure_until_it_has_measured_it():
    from dqnfast.loggers.console import MEASURED_AFTER, ConsoleLogger

    now = [0.0]

    for expected in (60.0, None):  # a CPU pixel run's start-up figure; a run without one
        now[0] = 0.0
        console = ConsoleLogger(
            total_steps=1_000_000, progress=True, learning_starts=50_000, learning_sps=expected, clock=lambda: now[0]
        )
        try:
            console.progress(1_000)  # the warm-up's clock starts at its first counted step
            now[0] = 38.0
            console.progress(19_000)  # 500 random steps/s
            if expected:
                assert console.time_left() == pytest.approx(30_000 / 500 + 950_000 / expected)
            else:
                assert console.time_left() is None and console.bar.format_dict["left"] == "?"
            now[0] = 100.0
            console.progress(30_000)  # learning starts at 50k
            now[0] = 110.0
            console.progress(2_000)  # 200 learning steps/s over 10 s
            measured = 948_000 / 200
            if expected:  # too young a measurement: the start-up figure still holds
                assert console.time_left() == pytest.approx(948_000 / expected)
                now[0] = 100.0 + MEASURED_AFTER
                console.progress(4_000)
                assert console.time_left() == pytest.approx(944_000 / (6_000 / MEASURED_AFTER))
            else:  # nothing better to go on: measured at once
                assert console.time_left() == pytest.approx(measured)
            seconds = console.time_left()
            h, rest = divmod(round(seconds), 3600)
            assert console.bar.format_dict["left"] == f"{h}:{rest // 60:02d}:{rest % 60:02d}"
            assert f"<{h}:{rest // 60:02d}:{rest % 60:02d}," in str(console.bar)
        finally:
            console.close()


def test_console_without_progress_bar_logs_one_line_per_row(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dqnfast.loggers")
    with RunLoggers(
        LoggerConfig(progress=False), RunInfo(tmp_path, "run", game="CartPole-v1"), total_steps=400
    ) as loggers:
        loggers.progress(200)
        loggers.log_metrics(row(200, score=21.5))
    lines = [r.getMessage() for r in caplog.records if r.name == "dqnfast.loggers"]
    assert len(lines) == 1 and "200/400 steps (50%)" in lines[0] and "score 21.50" in lines[0]
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "tensorboard").exists()


def test_eval_scalars_and_media(tmp_path):
    ev = {
        "scores": [-21.0, -19.0],
        "lengths": [800, 900],
        "mean": -20.0,
        "median": -20.0,
        "epsilon": 0.05,
        "game": "Pong-v5",
        "env_steps": 5000,
        "random": {"mean": -20.7},
    }
    s = eval_scalars(ev)
    assert s["eval/mean"] == -20.0 and s["eval/std"] == 1.0 and s["eval/min"] == -21.0 and s["eval/episodes"] == 2
    assert s["eval/random_mean"] == -20.7 and s["eval/length_mean"] == 850 and "eval/env_steps" not in s
    assert s["eval/human_normalized"] == pytest.approx((-20.0 + 20.7) / (14.6 + 20.7))
    assert "eval/human_normalized" not in eval_scalars({"mean": 200.0, "game": "CartPole-v1"})
    for name in ("eval_scores.png", "learning_curve.png", "eval.json", "metrics.csv"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "episode.mp4").write_bytes(b"x")
    assert [p.name for p in eval_media(tmp_path)] == ["eval_scores.png", "learning_curve.png", "episode.mp4"]


# -------------------------------------------------------------------- W&B
def test_choose_wandb_mode():
    never = lambda: pytest.fail("not asked")  # noqa: E731
    assert choose_wandb_mode("offline", has_credentials=never, reachable=never) == ("offline", None)
    assert choose_wandb_mode("disabled", has_credentials=never, reachable=never) == ("disabled", None)
    mode, why = choose_wandb_mode("online", has_credentials=lambda: False, reachable=never)
    assert mode == "offline" and "API key" in why
    mode, why = choose_wandb_mode("online", has_credentials=lambda: True, reachable=lambda: False)
    assert mode == "offline" and "reachable" in why
    assert choose_wandb_mode("online", has_credentials=lambda: True, reachable=lambda: True) == ("online", None)


def _png(path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    fig.savefig(path, format="png")
    return path


def test_wandb_offline_run_holds_config_metrics_eval_media_and_checkpoint(tmp_path, no_wandb_credentials, caplog):
    caplog.set_level(logging.INFO, logger="dqnfast.loggers")
    run_dir = tmp_path / "run"
    cfg = LoggerConfig(wandb=True, wandb_mode="offline", progress=False, wandb_checkpoint=True, wandb_tags=["lr"])
    info = RunInfo(
        run_dir,
        "Pong__dqn__1__0",
        game="Pong-v5",
        config={"optim": {"lr": 1e-4}, "seed": 1},
        group="sweep-1",
        tags=["dqn"],
    )
    with RunLoggers(cfg, info, total_steps=300) as loggers:
        for s in (100, 200, 300):
            loggers.log_metrics(row(s, score=s / 10))
        ck = run_dir / "checkpoint.pt"
        ck.write_bytes(b"weights")
        png = _png(run_dir / "eval_scores.png")
        loggers.log_eval(
            {"scores": [-21.0, -19.0], "mean": -20.0, "median": -20.0, "game": "Pong-v5"},
            step=300,
            media=[png, run_dir / "missing.gif"],
        )
        loggers.log_checkpoint(ck, step=300)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)  # offline was asked for: no warning
    run = read_wandb_run(run_dir)
    assert run["run"].display_name == "Pong__dqn__1__0" and run["run"].run_group == "sweep-1"
    assert list(run["run"].tags) == ["Pong", "dqn", "lr"]
    config = {u.key: json.loads(u.value_json) for u in run["run"].config.update}
    assert config["optim"] == {"lr": 1e-4} and config["seed"] == 1
    assert run["metrics"] == {"env_steps": "", "*": "env_steps"}  # env_steps is every metric's x-axis
    train = [h for h in run["history"] if "charts/episodic_return" in h]
    assert [h["env_steps"] for h in train] == [100, 200, 300]
    assert [h["charts/episodic_return"] for h in train] == [10.0, 20.0, 30.0]
    assert set(METRIC_KEYS.values()) <= set(train[0])
    (ev,) = [h for h in run["history"] if "eval/mean" in h]
    assert ev["env_steps"] == 300 and ev["eval/mean"] == -20.0 and ev["eval/scores/_type"] == "histogram"
    assert ev["eval/eval_scores/_type"] == "image-file" and "eval/missing/_type" not in ev
    assert run["summary"]["eval/mean"] == -20.0 and "eval/human_normalized" in run["summary"]
    (art,) = run["artifacts"]
    assert art.type == "model" and art.name.startswith("checkpoint-")
    assert run["exit_code"] == 0
    assert (run_dir / "wandb_run_id").read_text().strip() == run["run"].run_id


def test_wandb_online_without_api_key_falls_back_to_offline_in_one_line(tmp_path, no_wandb_credentials, caplog):
    caplog.set_level(logging.INFO, logger="dqnfast.loggers")
    cfg = LoggerConfig(wandb=True, wandb_mode="online", progress=False)
    with RunLoggers(cfg, RunInfo(tmp_path, "r", game="CartPole-v1"), total_steps=10) as loggers:
        assert loggers.wandb.mode == "offline"
        loggers.log_metrics(row(10))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no W&B API key" in warnings[0] and "wandb sync " in warnings[0]
    assert "\n" not in warnings[0]
    assert [h["env_steps"] for h in read_wandb_run(tmp_path)["history"]] == [10]


def test_wandb_online_with_key_but_no_server_falls_back_without_hanging(
    tmp_path, no_wandb_credentials, monkeypatch, caplog
):
    with socket.socket() as s:  # a local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    no_wandb_credentials.teardown()
    cfg = LoggerConfig(wandb=True, wandb_mode="online", progress=False, wandb_init_timeout=10)
    with RunLoggers(cfg, RunInfo(tmp_path, "r", game="CartPole-v1"), total_steps=10) as loggers:
        assert loggers.wandb.mode == "offline"
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not reachable" in warning


def test_a_crash_marks_the_wandb_run_failed_and_closes_every_logger(tmp_path, no_wandb_credentials):
    cfg = LoggerConfig(wandb=True, wandb_mode="offline", progress=False)
    with pytest.raises(RuntimeError, match="boom"):
        with RunLoggers(cfg, RunInfo(tmp_path, "r", game="CartPole-v1"), total_steps=10) as loggers:
            loggers.log_metrics(row(10))
            raise RuntimeError("boom")
    assert loggers.csv._file.closed and loggers.backends == []
    assert read_wandb_run(tmp_path)["exit_code"] == 1


def test_wandb_disabled_writes_nothing(tmp_path, no_wandb_credentials):
    cfg = LoggerConfig(wandb=True, wandb_mode="disabled", progress=False)
    with RunLoggers(cfg, RunInfo(tmp_path, "r"), total_steps=10) as loggers:
        loggers.log_metrics(row(10))
        loggers.log_eval({"mean": 1.0, "scores": [1.0]}, step=10)
    assert not (tmp_path / "wandb").exists() and (tmp_path / "metrics.csv").exists()


# -------------------------------------------------------------- TensorBoard
def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = LoggerConfig(tensorboard=True, progress=False)
    info = RunInfo(tmp_path, "r", game="Breakout-v5", config={"optim": {"lr": 1e-4}, "network": {"mlp": [64, 64]}})
    with RunLoggers(cfg, info, total_steps=200) as loggers:
        for s in (100, 200):
            loggers.log_metrics(row(s, score=s / 100))
        loggers.log_eval(
            {"scores": [2.0, 4.0], "mean": 3.0, "median": 3.0}, step=200, media=[_png(tmp_path / "learning_curve.png")]
        )
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert set(METRIC_KEYS.values()) <= set(tags["scalars"]) and "eval/mean" in tags["scalars"]
    ret = acc.Scalars("charts/episodic_return")
    assert [(e.step, e.value) for e in ret] == [(100, 1.0), (200, 2.0)]
    assert [e.value for e in acc.Scalars("eval/human_normalized")] == pytest.approx([(3.0 - 1.7) / (30.5 - 1.7)])
    assert "eval/learning_curve" in tags["images"] and "eval/scores" in tags["histograms"]
    assert math.isclose(acc.Scalars("losses/td_loss")[0].value, 0.5)


def test_the_console_names_a_layer_whose_units_are_all_dead():
    from dqnfast.loggers.console import postfix

    healthy = {**row(500), "dead_conv1": 0.0, "dead_conv2": 0.7, "dead_conv3": math.nan, "dead_hidden": 0.99}
    assert "dead" not in postfix(healthy)
    collapsed = {**healthy, "dead_conv3": 1.0}
    assert postfix(collapsed)["dead"] == "conv3 100%"


def test_metrics_csv_holds_the_dead_unit_columns_empty_until_learning(tmp_path):
    from dqnfast.loggers.csv_file import CsvLogger

    log = CsvLogger(tmp_path / "metrics.csv")
    dead = ("dead_conv1", "dead_conv2", "dead_conv3", "dead_hidden")
    log.log_metrics({**row(100), **dict.fromkeys(dead, math.nan)})
    log.log_metrics({**row(200), "dead_conv1": 0.0, "dead_conv2": 0.25, "dead_conv3": 1.0, "dead_hidden": math.nan})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [rows[0][k] for k in dead] == ["", "", "", ""]
    assert [rows[1][k] for k in dead] == ["0.0", "0.25", "1.0", ""]
