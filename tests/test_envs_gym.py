"""dqnfast.envs.gym: Gymnasium ids through the same loop, ring and evaluation as envpool's games.

The custom envs live in tests/gym_custom_env.py, registered on import (``envs.import=gym_custom_env``).
"""

from __future__ import annotations

import json
from pathlib import Path

import gym_custom_env  # noqa: F401  (registers the test envs)
import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dqnfast.checkpoint import load_checkpoint
from dqnfast.config import ConfigError, EnvsConfig, ProtocolConfig
from dqnfast.config.resolve import observation_kind
from dqnfast.envs import EnvStepError, make_env, resolve_game
from dqnfast.envs.gym import layout
from dqnfast.replay import ReplayRing

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _envs(**kw) -> EnvsConfig:
    return EnvsConfig(**{"import": "gym_custom_env", **kw})


# ------------------------------------------------------------- the translation
@settings(max_examples=25, deadline=None)
@given(
    num_envs=st.integers(1, 4),
    length=st.integers(3, 9),
    steps=st.integers(1, 60),
    seed=st.integers(0, 2**16),
    n_step=st.integers(1, 3),
)
def test_next_step_autoreset_is_envpools_rule_and_the_ring_learns_only_real_transitions(
    num_envs, length, steps, seed, n_step
):
    """Every result follows envpool's rule (reset step: elapsed_step 0, reward 0, flags off, the new
    episode's first obs; the action sent to a finished env is not applied), and every transition the
    ring can sample is a real one: s and s' of the same episode, s'.t = s.t + n, the n-step return of
    the env's rewards, the bootstrap cut only at ``terminated``."""
    env, spec = make_env(
        "gym:Counter-v0",
        "pixels",
        _envs(make_kwargs={"length": length}),
        ProtocolConfig(),
        seed=seed,
        num_envs=num_envs,
    )
    ring = ReplayRing(num_envs * 200, num_envs, spec.frame_shape, spec.frame_dtype, stack=1, n_step=n_step, gamma=0.5)
    rng = np.random.default_rng(seed)
    last = np.zeros(num_envs, np.int64)
    prev_done = np.ones(num_envs, bool)  # the reset is a first step
    env.async_reset()
    try:
        for _ in range(steps):
            obs, reward, term, trunc, info = env.recv()
            ids, elapsed = info["env_id"], info["elapsed_step"]
            assert (ids == np.arange(num_envs)).all()
            first = elapsed == 0
            assert (first == prev_done).all()
            assert (reward[first] == 0).all() and not (term[first] | trunc[first]).any()
            assert (
                (obs[first, 1] == 0).all()
                and (obs[:, 1] == elapsed).all()
                and (reward[~first] == elapsed[~first]).all()
            )
            ring.add(ids, obs, last[ids], reward, term, trunc, first)
            prev_done = term | trunc
            actions = rng.integers(0, 2, num_envs).astype(np.int32)
            env.send(actions, ids)
            last[ids] = actions
        sent = [e.unwrapped.actions for e in env.vec.envs]
    finally:
        env.close()
    for e in range(num_envs):  # an env got exactly its real steps' actions (none at its reset steps)
        assert len(sent[e]) <= steps
    idx = ring.valid_indices()
    if len(idx) == 0:
        return
    b = ring.gather(idx)
    s, s2 = np.asarray(b.obs).reshape(len(idx), 2), np.asarray(b.next_obs).reshape(len(idx), 2)
    disc, ret = np.asarray(b.discount), np.asarray(b.reward)
    for k in range(len(idx)):
        ep, t = s[k]
        if disc[k] == 0:  # terminated within n steps: s' is not used, the return is checked by the ring's tests
            continue
        m = int(s2[k, 1] - t)  # n, or fewer where the episode was truncated (bootstrapped from its last obs)
        assert s2[k, 0] == ep and (m == n_step or (m < n_step and s2[k, 1] == length)), (s[k], s2[k])
        want = sum(0.5**i * (t + 1 + i) for i in range(m))
        assert ret[k] == pytest.approx(want), (s[k], ret[k], want)
        assert disc[k] == pytest.approx(0.5**m)


def test_other_autoreset_modes_are_refused():
    gym.register(
        "SameStepCounter-v0",
        entry_point=gym_custom_env.Counter,
        kwargs={"vector_kwargs": {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}},
    )
    with pytest.raises(Exception, match="SAME_STEP mode; dqnfast's replay ring needs NEXT_STEP"):
        make_env(
            "gym:SameStepCounter-v0",
            "pixels",
            _envs(),
            ProtocolConfig(),
            seed=0,
            num_envs=2,
            task=("gym:SameStepCounter-v0", "gym"),
        )


def test_observation_layouts():
    """Images HxWxC -> CxHxW uint8 (bool -> 0/255), HxW -> 1xHxW, float boxes -> flat float32 vectors."""
    d = gym.spaces.Discrete(3)
    img = layout("x", gym.spaces.Box(0, 255, (6, 5, 3), np.uint8), d)
    assert (img.family, img.obs_kind, img.frame_shape) == ("gym_image", "image", (3, 6, 5))
    x = np.arange(2 * 6 * 5 * 3, dtype=np.uint8).reshape(2, 6, 5, 3)
    assert (img.convert(x) == x.transpose(0, 3, 1, 2)).all() and img.convert(x).flags.c_contiguous
    gray = layout("x", gym.spaces.Box(0, 255, (6, 5), np.uint8), d)
    assert gray.frame_shape == (1, 6, 5) and gray.convert(x[..., 0]).shape == (2, 1, 6, 5)
    b = layout("x", gym.spaces.Box(0, 1, (10, 10, 4), bool), d)
    assert set(np.unique(b.convert(np.eye(10, dtype=bool)[None, :, :, None].repeat(4, 3)))) == {0, 255}
    v = layout("x", gym.spaces.Box(-1, 1, (2, 3), np.float64), d)
    assert (v.obs_kind, v.frame_shape, v.frame_dtype) == ("vector", (6,), np.float32)
    assert observation_kind("gym_image", "pixels") == "image" and observation_kind("gym", "pixels") == "vector"


# ------------------------------------------------------------------ refusals
def test_unknown_id_names_close_registered_ids():
    with pytest.raises(ValueError, match=r"unknown Gymnasium id 'CartPol-v1'; did you mean gym:CartPole-v1"):
        resolve_game("gym:CartPol-v1")


@pytest.mark.parametrize(
    "game, match",
    [
        ("gym:Continuous-v0", "has a Box action space .* use an env with a Discrete action space"),
        ("gym:DictObs-v0", "has a Dict observation space; dqnfast takes Box observations"),
    ],
)
def test_unsupported_spaces_are_refused_in_one_line(game, match):
    with pytest.raises(ValueError, match=match) as e:
        resolve_game(game, _envs())
    assert "\n" not in str(e.value)


def test_failing_import_names_the_key():
    with pytest.raises(
        ConfigError, match=r"^envs.import: importing 'no_such_module_here' failed \(ModuleNotFoundError"
    ):
        resolve_game("gym:Counter-v0", EnvsConfig(**{"import": "no_such_module_here"}))


def test_bad_make_kwargs_name_the_key():
    with pytest.raises(ConfigError, match=r"^envs.make_kwargs: gym.make\('Counter-v0'"):
        resolve_game("gym:Counter-v0", _envs(make_kwargs={"no_such_kwarg": 1}))


def test_cli_refusals_are_one_line(train_in_process, tmp_path):
    for args, want in [
        (["game=gym:CartPol-v1"], "error: game: unknown Gymnasium id 'CartPol-v1'; did you mean gym:CartPole-v1"),
        (["game=gym:Counter-v0", "envs.import=no_such_module_here"], "error: envs.import: importing"),
        (["game=gym:Continuous-v0", "envs.import=gym_custom_env"], "error: game: gym:Continuous-v0 has a Box action"),
    ]:
        code, err = train_in_process(*args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
        assert code == 2, err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and lines[0].startswith(want), err


def test_env_that_raises_in_step_stops_in_one_line_and_keeps_the_checkpoint(train_in_process, tmp_path):
    out = tmp_path / "run"
    args = ["game=gym:Broken-v0", "envs.import=gym_custom_env", "+envs.make_kwargs.fail_at=175", "envs.num_envs=1"]
    args += ["network.name=mlp", "algo.learning_starts=20", "algo.total_steps=400", "logger.checkpoint_every=50"]
    code, err = train_in_process(*args, "logger.progress=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "gym:Broken-v0: env 0 raised in step: ValueError: the physics blew up" in lines[0]
    kept = load_checkpoint(out / "checkpoint.pt")["counters"]["env_steps"]  # the last one before the failure
    assert 150 <= kept < 400 and kept % 50 == 0, kept


# ------------------------------------------------------- training end to end
def test_custom_env_trains_through_envs_import_evaluates_and_resumes(train_in_process, evaluate_in_process, tmp_path):
    """A custom env defined only in tests/ learns (greedy: the 3-step path to the chain's end), is evaluated
    by ``python -m dqnfast.evaluate``, and a resume with the recorded actions continues it."""
    out = tmp_path / "run"
    common = ["game=gym:Chain-v0", "envs.import=gym_custom_env", "preset=cartpole", "envs.resume=replay"]
    common += ["algo.learning_starts=200", "explore.decay_steps=1000", "logger.progress=false", "torch_threads=1"]
    code, err = train_in_process(*common, "algo.total_steps=1500", f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    code, err = train_in_process(*common, f"resume={out}", "algo.total_steps=3000", cwd=tmp_path)
    assert code == 0, err[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["env_steps"] == 3000
    assert ev["lengths"] == [3] * len(ev["lengths"]) and ev["mean"] == 1.0, ev
    code, err = evaluate_in_process(f"run={out}", "episodes=4", "num_envs=2", cwd=tmp_path)
    assert code == 0, err[-3000:]
    again = json.loads((out / "eval" / "eval.json").read_text())
    assert again["game"] == "gym:Chain-v0" and again["lengths"] == [3, 3, 3, 3], again


def test_gym_cartpole_solves(train_in_process, tmp_path):
    """``preset=cartpole game=gym:CartPole-v1`` as shipped reaches a greedy mean of at least 475 of 500,
    as envpool's CartPole does under the same preset (random play: about 22)."""
    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=cartpole",
        "game=gym:CartPole-v1",
        "logger.progress=false",
        "torch_threads=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["mean"] >= 475 and ev["random"]["mean"] < 50, ev


def test_minatar_preset_trains_and_evaluates(train_in_process, tmp_path):
    pytest.importorskip("minatar", reason="MinAtar's games need the minatar package (pip install -e '.[minatar]')")
    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=minatar",
        "algo.total_steps=400",
        "algo.learning_starts=200",
        "envs.eval.episodes=2",
        "envs.eval.num_envs=2",
        "logger.progress=false",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["network"]["kind"] == "minatar" and ck["network"]["obs_shape"] == [4, 10, 10]
    assert ck["obs"]["kind"] == "image"
    assert json.loads((out / "eval.json").read_text())["episodes"] == 2


def test_async_vectorization_gives_the_same_stream_as_sync():
    streams = []
    for mode in ("sync", "async"):
        env, _ = make_env(
            "gym:CartPole-v1", "pixels", EnvsConfig(vectorization=mode), ProtocolConfig(), seed=3, num_envs=2
        )
        env.async_reset()
        rows = []
        try:
            for k in range(40):
                obs, reward, term, trunc, info = env.recv()
                rows.append((obs.copy(), info["elapsed_step"].copy()))
                env.send(np.full(2, k % 2, np.int32), info["env_id"])
            env.recv()
        finally:
            env.close()
        streams.append(rows)
    for (a, ea), (b, eb) in zip(*streams):
        assert (a == b).all() and (ea == eb).all()


def test_env_error_from_make_env_is_an_env_step_error():
    env, _ = make_env(
        "gym:Broken-v0", "pixels", _envs(make_kwargs={"fail_at": 2}), ProtocolConfig(), seed=0, num_envs=2
    )
    env.async_reset()
    env.recv()
    env.send(np.zeros(2, np.int32), np.arange(2))
    env.recv()
    with pytest.raises(EnvStepError, match=r"gym:Broken-v0: env 0 raised in step: ValueError: the physics blew up"):
        env.send(np.zeros(2, np.int32), np.arange(2))
    env.close()
