"""dqnfast.train: configs, start-up errors, and real runs of the CLI.

The CLI tests run ``python -m dqnfast.train`` in a subprocess with tiny settings and
``hydra.run.dir`` under tmp_path; the CartPole tests check that DQN really learns.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dqnfast.agent.networks import make_network
from dqnfast.atomic import TEMP_MARK
from dqnfast.checkpoint import load_checkpoint
from dqnfast.cli.train import CONF_DIR, to_config
from dqnfast.config import Config, ConfigError, validate
from dqnfast.loggers import METRIC_COLUMNS
from dqnfast.training import check_config, train

REPO = Path(__file__).resolve().parents[1]
PROMISED_COLUMNS = [
    "env_steps",
    "frames",
    "episodes",
    "score_mean",
    "score_median",
    "episode_length_mean",
    "loss",
    "q_mean",
    "epsilon",
    "sps",
    "time",
]


def composed(*overrides: str) -> Config:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return to_config(compose(config_name="config", overrides=list(overrides)))


# ------------------------------------------------------------------- configs
def test_yaml_defaults_match_the_schema_and_are_the_nature_recipe_with_double_dqn():
    cfg = composed()
    assert cfg == Config()  # every default is in YAML, and the dataclasses agree with it
    a, o = cfg.algo, cfg.optim
    assert a.double and a.loss == "huber" and a.batch_size == 32 and a.gamma == 0.99
    assert a.replay_ratio == 8.0 and a.target_update_period == 10_000 and a.learning_starts == 50_000
    assert a.total_steps == 10_000_000 and cfg.replay.capacity == 1_000_000 and cfg.replay.n_step == 1
    assert cfg.explore.start == 1.0 and cfg.explore.end == 0.1 and cfg.explore.decay_steps == 1_000_000
    assert cfg.envs.train.episodic_life and cfg.envs.train.reward_clip and cfg.envs.train.noop_max == 30
    assert cfg.envs.train.max_episode_steps == 27_000
    assert not cfg.envs.eval.episodic_life and not cfg.envs.eval.reward_clip
    assert o.name == "adam" and o.lr == 1e-4
    # torch's default: a larger eps (1.5e-4) shrank the early Huber-loss steps tenfold and the
    # default recipe stayed at random play on Breakout (benchmarks/learning.py checks learning).
    assert o.eps == 1e-8
    validate(cfg)


def test_cpu_budget_preset_scales_the_default_recipe():
    cfg = composed("preset=cpu_budget", "game=Breakout")
    a, x = cfg.algo, cfg.explore
    assert (a.total_steps, a.learning_starts, cfg.replay.capacity) == (300_000, 20_000, 100_000)
    # epsilon reaches its end value at 75k agent steps; the target syncs every 1000 agent steps
    assert (x.schedule, x.end, a.learning_starts + x.decay_steps) == ("linear", 0.01, 75_000)
    assert a.target_update_period * a.batch_size / a.replay_ratio == 1000
    assert cfg.envs.eval.episodes == 30
    default = composed("game=Breakout")
    for key in ("double", "loss", "max_grad_norm", "batch_size", "replay_ratio", "gamma"):
        assert getattr(a, key) == getattr(default.algo, key), key
    assert cfg.optim == default.optim and cfg.envs.num_envs == default.envs.num_envs
    validate(cfg)


def test_nature_preset():
    cfg = composed("preset=nature", "game=SpaceInvaders")
    a, o = cfg.algo, cfg.optim
    assert cfg.game == "SpaceInvaders" and not a.double and a.max_grad_norm is None
    # Nature's 0.01 inside the root of summed-batch squared gradients, for a batch-mean loss with
    # torch's eps outside the root: sqrt(0.01 / 32**2).
    assert (o.name, o.lr, o.alpha, o.eps, o.centered) == ("rmsprop", 2.5e-4, 0.95, 3.125e-3, True)
    assert (a.total_steps, a.target_update_period, a.learning_starts, cfg.replay.capacity) == (
        10_000_000,
        10_000,
        50_000,
        1_000_000,
    )
    assert cfg.network.name == "nature" and cfg.explore.eval_epsilon == 0.05
    assert composed("preset=nature", "optim=adam").optim.name == "adam"  # the command line wins
    check_config(cfg)


@pytest.mark.parametrize("preset", ["quick", "cartpole"])
def test_presets_compose_and_validate(preset):
    cfg = composed(f"preset={preset}")
    check_config(cfg)
    assert cfg.algo.total_steps <= 60_000


def test_rainbow_preset_is_the_published_recipe_with_every_component():
    cfg = composed("preset=rainbow")
    check_config(cfg)
    a, n, r, o, x = cfg.algo, cfg.network, cfg.replay, cfg.optim, cfg.explore
    # Hessel et al. 2018, Table 1 and section 3: the six components
    assert a.double and n.dueling and r.n_step == 3 and r.prioritized
    assert (a.distributional, a.atoms, a.v_min, a.v_max) == ("c51", 51, -10.0, 10.0)
    assert n.noisy and n.noisy_sigma0 == 0.5
    assert (x.start, x.end) == (0.0, 0.0) and x.eval_epsilon == 0.001  # noise explores; Dopamine's eval epsilon
    assert (r.alpha, r.beta0, o.name, o.lr, o.eps) == (0.5, 0.4, "adam", 6.25e-5, 1.5e-4)
    assert (a.learning_starts, a.batch_size, a.replay_ratio, r.capacity) == (20_000, 32, 8.0, 1_000_000)
    assert a.target_update_period * a.batch_size / a.replay_ratio == 8000  # agent steps between syncs
    assert a.total_steps * cfg.envs.frame_skip == 200_000_000


def test_c51_preset_is_the_published_recipe():
    cfg = composed("preset=c51")
    check_config(cfg)
    a, n, r, o, x = cfg.algo, cfg.network, cfg.replay, cfg.optim, cfg.explore
    # Bellemare et al. 2017, section 5, as Dopamine's c51.gin runs it
    assert (a.distributional, a.atoms, a.v_min, a.v_max) == ("c51", 51, -10.0, 10.0)
    assert not a.double and not n.dueling and not n.noisy and r.n_step == 1 and not r.prioritized
    assert (o.name, o.lr, o.eps) == ("adam", 2.5e-4, 0.01 / 32)
    assert a.target_update_period * a.batch_size / a.replay_ratio == 8000
    assert (x.end, x.decay_steps, x.eval_epsilon) == (0.01, 250_000, 0.001)


def test_fast_preset_keeps_the_nature_budget_with_fewer_larger_updates():
    d, f = composed(), composed("preset=fast")
    check_config(f)
    assert (f.algo.total_steps, f.replay.capacity, f.algo.replay_ratio) == (
        d.algo.total_steps,
        d.replay.capacity,
        d.algo.replay_ratio,
    )
    assert f.envs.num_envs == 64 and f.envs.batch_size == 32 and f.algo.batch_size == 256
    # the target is synced after as many agent steps as the default recipe's
    steps_between_syncs = lambda c: c.algo.target_update_period * c.algo.batch_size / c.algo.replay_ratio  # noqa: E731
    assert steps_between_syncs(f) == steps_between_syncs(d)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: setattr(c.optim, "lr", -1.0), "optim.lr"),
        (lambda c: setattr(c.replay, "capacity", 16), "algo.batch_size"),
        (lambda c: setattr(c.network, "name", "resnet"), "network.name"),
        (lambda c: setattr(c, "obs", "rgb"), "obs"),
        (lambda c: setattr(c.algo, "gamma", 1.5), "algo.gamma"),
        (lambda c: setattr(c.explore, "end", 2.0), "explore.end"),
        (lambda c: setattr(c.envs, "batch_size", 99), "envs.batch_size"),
        (lambda c: setattr(c.algo, "compile", "maybe"), "algo.compile"),
        (lambda c: setattr(c.algo, "amp", "fp8"), "algo.amp"),
        (lambda c: setattr(c.replay, "storage", "disk"), "replay.storage"),
        (lambda c: (setattr(c, "device", "cpu"), setattr(c.replay, "storage", "cuda")), "replay.storage"),
        (lambda c: setattr(c, "game", "Pongg"), "game"),
        (lambda c: setattr(c.replay, "alpha", 1.5), "replay.alpha"),
        (lambda c: setattr(c.replay, "beta0", -0.1), "replay.beta0"),
        (lambda c: setattr(c.replay, "priority_eps", 0.0), "replay.priority_eps"),
        (lambda c: (setattr(c, "obs", "ram"), setattr(c.network, "name", "nature")), "network.name"),
        (lambda c: (setattr(c, "game", "CartPole"), setattr(c, "obs", "ram")), "obs"),
        (lambda c: setattr(c.envs.eval, "noop_max", 0), "envs.eval.noop_max"),  # envpool would crash
    ],
)
def test_bad_values_name_their_key(change, key):
    cfg = Config()
    change(cfg)
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert e.value.key == key and str(e.value).startswith(f"{key}: ") and "\n" not in str(e.value)


# ------------------------------------------------------------------------ CLI
@pytest.mark.parametrize(
    "args, key, hint",
    [
        (["optim.lr=-1"], "optim.lr", "> 0"),
        (["algo.batch_size=64", "replay.capacity=32"], "algo.batch_size", "replay.capacity=32"),
        (["network.name=foo"], "network.name", "auto, nature, mlp"),
        (["network=foo"], "network", "dueling"),
        (["game=Pongg"], "game", "Pong"),
        (["replay.capacity=100000000000"], "replay.capacity", "GB"),  # checked before allocating
        (["replay.prioritized=true", "replay.alpha=2"], "replay.alpha", "[0, 1]"),
    ],
)
def test_cli_bad_value_is_a_one_line_error(train_in_process, tmp_path, args, key, hint):
    # through the CLI's entry point in this process; the next test runs one in a process of its own
    code, err = train_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    err = err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {key}: ") and hint in err


def test_cli_bad_value_is_a_one_line_error_in_a_process_of_its_own(run_cli):
    proc, _ = run_cli("replay.capacity=100000000000", timeout=120)  # refused after Hydra has composed
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, err
    assert err.startswith("error: replay.capacity: ") and "GB" in err


@pytest.mark.parametrize("args", [["optim.lr=-1"], ["algo.batch_size=64", "replay.capacity=32"]])
def test_refused_run_leaves_no_output_folder(tmp_path, monkeypatch, capsys, args):
    import sys

    from dqnfast.cli.train import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dqnfast.train", *args])
    with pytest.raises(SystemExit) as e:
        cli()
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ")
    assert list(tmp_path.iterdir()) == []  # no outputs/DATE/TIME, no outputs/DATE


def test_refused_run_keeps_a_folder_that_holds_results(tmp_path, monkeypatch):
    import sys

    from dqnfast.cli.train import cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("env_steps\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dqnfast.train", "optim.lr=-1", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit):
        cli()
    # refused before Hydra writes (a new run would overwrite that metrics.csv): the folder is as it was
    assert [p.name for p in run.iterdir()] == ["metrics.csv"] and (run / "metrics.csv").read_text() == "env_steps\n"


NON_ASCII_RUN = [
    "preset=cartpole",
    "algo.learning_starts=100",
    "logger.log_every=100",
    "logger.progress=false",
    "envs.eval.episodes=1",
    "envs.eval.num_envs=1",
    "envs.eval.max_episode_steps=50",
    "torch_threads=1",
]


def test_a_run_dir_with_letters_beyond_ascii_runs_resumes_and_evaluates_by_path(
    tmp_path, train_in_process, evaluate_in_process
):
    """Hydra's grammar takes such letters only quoted: path keys are quoted for it, as typed or quoted by
    the user; any other key with them is one line that says how to quote it, and leaves nothing.

    The fresh run is a process of its own (its arguments as a shell passes them); the resumes,
    the evaluation and the refusal go through the same entry points in this process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))

    def run(module: str, *args: str, own_process: bool = False) -> tuple[int, str]:
        if not own_process:
            in_process = {"dqnfast.train": train_in_process, "dqnfast.evaluate": evaluate_in_process}[module]
            return in_process(*args, cwd=tmp_path)
        cmd = [sys.executable, "-m", module, *args]
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        return proc.returncode, proc.stderr

    run_dir = tmp_path / "runé ü"
    steps = [("hydra.run.dir=runé ü", 200), ("resume='runé ü'", 300), (f"resume={run_dir}", 400)]
    for arg, total in steps:  # fresh (unquoted), resumed quoted, resumed unquoted
        fresh = arg.startswith("hydra.run.dir=")
        code, err = run("dqnfast.train", *NON_ASCII_RUN, f"algo.total_steps={total}", arg, own_process=fresh)
        assert code == 0, (arg, err[-3000:])
        assert load_checkpoint(run_dir / "checkpoint.pt")["counters"]["env_steps"] == total
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runé ü"]  # every segment in its own folder
    code, err = run("dqnfast.evaluate", f"run={run_dir}", "episodes=1", "num_envs=1", "max_episode_steps=50")
    assert code == 0, err[-3000:]
    assert json.loads((run_dir / "eval" / "eval.json").read_text())["env_steps"] == 400
    code, err = run("dqnfast.train", *NON_ASCII_RUN, "game=Pongé", "hydra.run.dir=refused")
    assert code == 2 and "Traceback" not in err, err
    assert err.strip() == (
        "error: game: 'Pongé': Hydra's override grammar takes characters beyond ASCII only inside quotes; "
        "write game='Pongé' (in a shell: \"game='Pongé'\")"
    )
    assert not (tmp_path / "refused").exists()


def test_cli_help_and_cfg(run_cli):
    proc, _ = run_cli("--help", run_dir=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "== Config groups" in proc.stdout and "cartpole, cpu_budget, fast, minatar, nature, quick" in proc.stdout
    proc, _ = run_cli("game=Breakout", "preset=nature", "--cfg", "job", run_dir=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout)
    assert job["game"] == "Breakout" and job["algo"]["double"] is False and job["optim"]["name"] == "rmsprop"


TINY = [
    "algo.learning_starts=200",
    "algo.total_steps=400",
    "replay.capacity=2000",
    "logger.log_every=100",
    "logger.progress=false",
    "envs.eval.episodes=1",
    "envs.eval.num_envs=1",
    "envs.eval.max_episode_steps=100",
    "algo.target_update_period=10",
]


def check_run(out, game: str, *, total: int, updates: float, network: str) -> dict:
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert list(rows[0])[: len(PROMISED_COLUMNS)] == PROMISED_COLUMNS and list(rows[0]) == list(METRIC_COLUMNS)
    assert int(rows[-1]["env_steps"]) == total and int(rows[-1]["frames"]) == 4 * total and len(rows) >= 4
    assert all(float(r["loss"]) >= 0 for r in rows[2:])
    # the pre-clipping gradient norm: positive, its max over a row at least its mean
    assert all(float(r["grad_norm_max"]) >= float(r["grad_norm"]) > 0 for r in rows[2:])
    # dead ReLU units on each row's last batch: empty before learning, a fraction after; convs only in a CNN
    layers = ("conv1", "conv2", "conv3", "hidden") if network == "nature" else ("hidden",)
    assert all(r[f"dead_{k}"] == "" for r in rows[:1] for k in layers)
    assert all(0.0 <= float(r[f"dead_{k}"]) <= 1.0 for r in rows[2:] for k in layers)
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["game"] == game and ck["config"]["game"] == game.split("-")[0] and ck["network"]["kind"] == network
    assert ck["counters"]["env_steps"] == total and abs(ck["counters"]["updates"] - updates) <= 1
    net = make_network(ck["network"])
    net.load_state_dict(ck["online"])
    ev = json.loads((out / "eval.json").read_text())
    assert len(ev["scores"]) == 1 and ev["game"] == game
    assert not list(out.glob(f"*{TEMP_MARK}*"))
    return ck


# The Atari runs go through the CLI's entry point in this process: the CLI in processes of their
# own is run by cartpole_learned (tests/conftest.py) and the fault-injection tests.
def test_cli_atari_pixels_run(train_in_process, tmp_path):
    # replay ratio 2 (one batch-32 update per 16 agent steps) keeps the Nature CNN's CPU updates few
    out = tmp_path / "run"
    code, err = train_in_process(
        "game=Pong", "envs.num_envs=2", *TINY, "algo.replay_ratio=2", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert code == 0, err[-3000:]
    ck = check_run(out, "Pong-v5", total=400, updates=(400 - 200) * 2 / 32, network="nature")
    assert ck["network"]["obs_shape"] == [4, 84, 84]
    assert (out / ".hydra" / "config.yaml").exists()


def test_cli_atari_ram_async_run(train_in_process, tmp_path):
    out = tmp_path / "run"
    code, err = train_in_process(
        "game=Breakout", "obs=ram", "envs.num_envs=4", "envs.batch_size=2", *TINY, f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert code == 0, err[-3000:]
    ck = check_run(out, "Breakout-v5", total=400, updates=(400 - 200) * 8 / 32, network="mlp")
    assert ck["network"]["obs_shape"] == [128] and ck["network"]["obs_dtype"] == "uint8"


# ------------------------------------------------------------------- learning
def test_cli_cartpole_learns(cartpole_learned):
    """DQN really learns: mean greedy evaluation return >= 400 (of 500) on CartPole-v1
    (``python -m dqnfast.train preset=cartpole seed=1``, run by the fixture)."""
    ev = json.loads((cartpole_learned / "eval.json").read_text())
    assert len(ev["scores"]) == 10
    assert ev["mean"] >= 400, ev


def test_c51_learns_cartpole(train_in_process, tmp_path):
    """The distributional head learns too: C51 (51 atoms on [0, 100], CartPole's discounted returns at
    gamma 0.99 stay below 100) on the cartpole preset reaches a mean greedy evaluation >= 400 of 500."""
    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=cartpole",
        "algo.distributional=c51",
        "algo.v_min=0",
        "algo.v_max=100",
        "logger.progress=false",
        "torch_threads=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert (ck["network"]["atoms"], ck["network"]["v_max"]) == (51, 100.0)
    ev = json.loads((out / "eval.json").read_text())
    assert ev["mean"] >= 400, ev


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_cartpole_learns_for_other_seeds(tmp_path, seed):
    cfg = composed("preset=cartpole", f"seed={seed}", "logger.progress=false")
    result = train(cfg, tmp_path, config_dict=dataclasses.asdict(cfg))
    assert result["eval"]["mean"] >= 400, result["eval"]


def test_the_epsilon_decay_can_count_from_the_first_step_as_cleanrl():
    from dqnfast.training.components import epsilon_schedule

    s = epsilon_schedule(composed("preset=cpu_budget", "explore.from_start=true", "explore.decay_steps=75000"))
    assert s(0) == 1.0 and s(37_500) == pytest.approx(0.505) and s(75_000) == pytest.approx(0.01)
    default = epsilon_schedule(composed("preset=cpu_budget"))
    assert default(19_999) == 1.0 and default(20_000) == 1.0 and default(75_000) == pytest.approx(0.01)
