"""dqnfast.envs: game names, env building, and the envpool facts the loop relies on."""

from __future__ import annotations

import numpy as np
import pytest

from dqnfast.checkpoint import load_checkpoint
from dqnfast.config import EnvsConfig, EvalProtocolConfig, ProtocolConfig
from dqnfast.envs import (
    ActionLog,
    GameTracker,
    atari_games,
    frames_of,
    make_env,
    make_replay_env,
    observation_of,
    raw_reward_of,
    resolve_game,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Pong", ("Pong-v5", "atari")),
        ("pong", ("Pong-v5", "atari")),
        ("Pong-v5", ("Pong-v5", "atari")),
        ("SpaceInvaders", ("SpaceInvaders-v5", "atari")),
        ("space_invaders", ("SpaceInvaders-v5", "atari")),
        ("Breakout", ("Breakout-v5", "atari")),
        ("CartPole", ("CartPole-v1", "classic")),
        ("CartPole-v1", ("CartPole-v1", "classic")),
        ("Acrobot", ("Acrobot-v1", "classic")),
        ("MountainCar", ("MountainCar-v0", "classic")),
        ("LunarLander-v3", ("LunarLander-v3", "classic")),  # envpool's Box2D suite: discrete, vector obs
        ("lunarlander-v2", ("LunarLander-v2", "classic")),
        ("starpiloteasy-v0", ("StarpilotEasy-v0", "envpool_image")),  # Procgen: uint8 3x64x64 images
        ("BigfishHard-v0", ("BigfishHard-v0", "envpool_image")),
    ],
)
def test_resolve_game(name, expected):
    assert resolve_game(name) == expected


def test_every_envpool_atari_game_resolves():
    games = atari_games()
    assert len(games) > 50 and {"Pong", "Breakout", "SpaceInvaders", "MontezumaRevenge"} <= set(games)
    assert all(resolve_game(g) == (f"{g}-v5", "atari") for g in games)


@pytest.mark.parametrize(
    "name, close",
    [("Pongg", "Pong"), ("SpaceInvader", "SpaceInvaders"), ("Cartpol", "CartPole"), ("brekout", "Breakout")],
)
def test_unknown_game_suggests_close_names(name, close):
    with pytest.raises(ValueError) as e:
        resolve_game(name)
    msg = str(e.value)
    assert "\n" not in msg
    assert repr(name) in msg and close in msg.split("did you mean")[1]


@pytest.mark.parametrize(
    "name, words",
    [
        ("LunarLanderContinuous-v3", "has Box actions; dqnfast's learners take one discrete action"),
        ("Taxi-v3", "gives Discrete observations; through envpool dqnfast takes flat vector observations"),
        ("FrozenLake-v1", "gives Discrete observations"),
    ],
)
def test_envpool_envs_of_other_suites_that_cannot_train_are_refused_in_one_line(name, words):
    with pytest.raises(ValueError) as e:
        resolve_game(name)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_procgen_without_qt_5_is_refused_in_one_line_naming_the_extra(monkeypatch):
    import envpool.procgen

    from dqnfast.envs import envpool as backend

    monkeypatch.setattr(envpool.procgen, "_PROCGEN_IMPORT_ERROR", ImportError("libQt5Core.so.5: cannot open"))
    monkeypatch.setattr(backend, "qt_library_dir", lambda: None)
    with pytest.raises(ValueError) as e:
        resolve_game("CoinrunEasy-v0")
    msg = str(e.value)
    assert "\n" not in msg and "needs the Qt 5 runtime" in msg and "pip install 'dqnfast[procgen]'" in msg


def test_procgen_loads_the_qt_5_libraries_of_the_procgen_extra():
    import envpool.procgen

    from dqnfast.envs.envpool import QT_LIBRARIES, load_suite, qt_library_dir

    libs = qt_library_dir()
    assert libs is not None and all((libs / name).is_file() for name in QT_LIBRARIES)
    load_suite("StarpilotEasy-v0")
    assert envpool.procgen._PROCGEN_IMPORT_ERROR is None and hasattr(envpool.procgen, "ProcgenEnvSpec")


def test_an_envpool_procgen_batch_gives_images_and_resets_on_the_next_step():
    from dqnfast.envs import image_shape

    assert image_shape("StarpilotEasy-v0", "envpool_image") == (3, 64, 64)
    n = 4
    env, spec = make_env("StarpilotEasy-v0", "pixels", EnvsConfig(num_envs=n, num_threads=1), ProtocolConfig(), seed=3)
    try:
        assert (spec.family, spec.obs_kind, spec.stack, spec.frame_skip) == ("envpool_image", "image", 1, 1)
        assert spec.obs_shape == spec.frame_shape == (3, 64, 64) and spec.frame_dtype == np.uint8
        assert spec.num_actions == 15
        obs, info = env.reset()
        assert obs.shape == (n, 3, 64, 64) and obs.dtype == np.uint8 and (info["elapsed_step"] == 0).all()
        np.testing.assert_array_equal(frames_of(obs, info, "image"), obs)  # stored whole: no frame stack
        rng = np.random.default_rng(0)
        done, ends = np.zeros(n, bool), 0
        for _ in range(400):  # random play dies within about 80 steps: several games end
            obs, rew, term, trunc, info = env.step(rng.integers(0, 15, n).astype(np.int32))
            # the ring's rule: the step after an episode's last one is the next episode's first, reward 0
            assert (info["elapsed_step"][done] == 0).all() and (rew[done] == 0).all()
            assert (info["elapsed_step"][~done] > 0).all()
            done = term | trunc
            ends += int(done.sum())
        assert ends >= n
    finally:
        env.close()


def test_envpool_settings_come_from_make_kwargs_and_bad_ones_are_refused_in_one_line():
    from dqnfast.config import ConfigError

    def envs(**kw):
        return EnvsConfig(num_envs=2, num_threads=1, make_kwargs=kw)

    settings = {"num_levels": 3, "start_level": 7, "distribution_mode": 1}
    assert resolve_game("StarpilotEasy-v0", envs(**settings)) == ("StarpilotEasy-v0", "envpool_image")
    env, _ = make_env("StarpilotEasy-v0", "pixels", envs(**settings), ProtocolConfig(), seed=0)
    try:
        assert {k: env.config[k] for k in settings} == settings
        alone = make_replay_env("StarpilotEasy-v0", env.config, 1)  # a video's env plays the same levels
        assert {k: alone.config[k] for k in settings} == settings
        alone.close()
    finally:
        env.close()
    for game, kw, words in [
        ("StarpilotEasy-v0", {"num_level": 3}, "has no setting 'num_level'; did you mean num_levels"),
        ("Pong", {"frame_skip": 2}, "frame_skip is dqnfast's to set for envpool: use envs.frame_skip"),
        ("CartPole", {"num_envs": 2}, "num_envs is dqnfast's to set for envpool: use envs.num_envs"),
    ]:
        with pytest.raises(ConfigError) as e:
            resolve_game(game, envs(**kw))
        assert e.value.key == "envs.make_kwargs" and words in str(e.value) and "\n" not in str(e.value)


def test_a_procgen_env_replays_alone_as_it_played_in_its_batch():
    """Each env of a Procgen batch is seeded seed + i, so a one-env env re-plays it (what videos rely on)."""
    env, _ = make_env("StarpilotEasy-v0", "pixels", EnvsConfig(num_envs=3, num_threads=1), ProtocolConfig(), seed=5)
    rng = np.random.default_rng(1)
    actions = [rng.integers(0, 15, 3).astype(np.int32) for _ in range(120)]
    try:
        seen = [env.reset()[0][2].copy()]
        seen += [env.step(a)[0][2].copy() for a in actions]
        config = env.config
    finally:
        env.close()
    alone = make_replay_env("StarpilotEasy-v0", config, 2)
    try:
        replayed = [alone.reset()[0][0]] + [alone.step(a[2:])[0][0] for a in actions]
    finally:
        alone.close()
    for k, (a, b) in enumerate(zip(seen, replayed)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {k}")


def test_a_procgen_evaluation_writes_a_video_of_its_screen(train_in_process, tmp_path):
    imageio = pytest.importorskip("imageio.v2", reason="videos need imageio and imageio-ffmpeg")
    pytest.importorskip("imageio_ffmpeg", reason="videos need imageio-ffmpeg")
    from dqnfast.evaluation import EvalConfig, evaluate

    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=cartpole",
        "game=StarpilotEasy-v0",
        "network.name=auto",
        "algo.total_steps=400",
        "algo.learning_starts=200",
        "algo.replay_ratio=1",  # a few Nature CNN updates: the run only has to make a checkpoint
        "envs.eval.episodes=1",
        "envs.eval.num_envs=1",
        "logger.progress=false",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    cfg = EvalConfig(run=str(out), episodes=2, num_envs=2, video=True, random_baseline=False, plots=False, device="cpu")
    v = evaluate(cfg, tmp_path / "eval", echo=False)["video"]
    assert v["shape"] == [256, 256, 3] and v["fps"] == 15.0 and v["frames"] == v["length"] + 1
    reader = imageio.get_reader(v["mp4"])
    try:
        first = reader.get_data(0)
        assert first.shape == (256, 256, 3) and first.std() > 10  # a picture (Starpilot is mostly dark), not black
        assert sum(1 for _ in reader) == v["frames"]
    finally:
        reader.close()


def test_minigrids_view_is_flattened_to_the_codes_then_the_direction_one_hot():
    from dqnfast.envs.envpool import flatten_grid_view

    image = np.arange(2 * 7 * 7 * 3, dtype=np.uint8).reshape(2, 7, 7, 3) % 11
    out = flatten_grid_view({"image": image, "direction": np.array([3, 0], np.int32), "mission": np.zeros((2, 96))})
    assert out.shape == (2, 151) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :147], image.reshape(2, -1))
    np.testing.assert_array_equal(out[:, 147:], [[0, 0, 0, 1], [1, 0, 0, 0]])


def test_an_envpool_minigrid_batch_gives_its_flattened_view():
    assert resolve_game("minigrid-empty-5x5-v0") == ("MiniGrid-Empty-5x5-v0", "classic")
    env, spec = make_env(
        "MiniGrid-Empty-5x5-v0", "pixels", EnvsConfig(num_envs=2, num_threads=1), ProtocolConfig(), seed=0
    )
    try:
        assert spec.obs_shape == (151,) and spec.frame_dtype == np.float32 and spec.num_actions == 7
        obs, _ = env.reset()
        assert obs.shape == (2, 151) and obs[:, 147:].sum() == 2  # one direction each
        obs, *_ = env.step(np.zeros(2, np.int32))
        assert obs.shape == (2, 151)
    finally:
        env.close()


@pytest.mark.parametrize(
    "game, obs_shape, actions, network",
    [
        ("LunarLander-v3", [8], 4, "mlp"),  # Box2D's vector
        ("MiniGrid-Empty-5x5-v0", [151], 7, "mlp"),  # MiniGrid's view flattened
        ("StarpilotEasy-v0", [3, 64, 64], 15, "auto"),  # Procgen's images: the auto rule picks the Nature CNN
    ],
)
def test_an_envpool_env_of_another_suite_trains_like_classic_control(
    train_in_process, tmp_path, game, obs_shape, actions, network
):
    out = tmp_path / "run"
    code, err = train_in_process(
        "preset=cartpole",
        f"game={game}",
        f"network.name={network}",
        "algo.replay_ratio=2",  # CartPole's 16 is many Nature CNN updates for Procgen's row
        "algo.total_steps=800",
        "algo.learning_starts=400",
        "envs.eval.episodes=2",
        "envs.eval.num_envs=2",
        "logger.progress=false",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    ck = load_checkpoint(out / "checkpoint.pt")
    assert ck["game"] == game and ck["network"]["obs_shape"] == obs_shape and ck["num_actions"] == actions
    assert ck["network"]["kind"] == ("nature" if network == "auto" else network) and (out / "eval.json").is_file()


def test_make_env_atari_pixels():
    env, spec = make_env("Pong", "pixels", EnvsConfig(num_envs=2, num_threads=1), ProtocolConfig(), seed=0)
    try:
        assert (spec.task_id, spec.family, spec.obs_kind) == ("Pong-v5", "atari", "pixels")
        assert spec.obs_shape == (4, 84, 84) and spec.frame_shape == (84, 84) and spec.stack == 4
        assert spec.frame_dtype == np.uint8 and spec.num_actions == 6 and spec.frame_skip == 4
        assert not spec.is_async
        obs, info = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert observation_of(obs, info, "pixels") is obs
        np.testing.assert_array_equal(frames_of(obs, info, "pixels"), obs[:, -1])
        assert (info["elapsed_step"] == 0).all()
    finally:
        env.close()


def test_make_env_atari_ram_and_classic_vector():
    env, spec = make_env("Breakout", "ram", EnvsConfig(num_envs=2, num_threads=1), ProtocolConfig(), seed=0)
    try:
        assert (spec.obs_kind, spec.obs_shape, spec.frame_shape, spec.stack) == ("ram", (128,), (128,), 1)
        obs, info = env.reset()
        ram = observation_of(obs, info, "ram")
        assert ram.shape == (2, 128) and ram.dtype == np.uint8
        np.testing.assert_array_equal(frames_of(obs, info, "ram"), ram)
    finally:
        env.close()
    env, spec = make_env("CartPole", "pixels", EnvsConfig(num_envs=3, num_threads=1), ProtocolConfig(), seed=0)
    try:
        assert (spec.family, spec.obs_kind, spec.obs_shape) == ("classic", "vector", (4,))
        assert spec.stack == 1 and spec.frame_skip == 1
        assert spec.frame_dtype == np.float32 and spec.num_actions == 2
        obs, info = env.reset()
        assert obs.shape == (3, 4) and obs.dtype == np.float32
        assert env.spec.config.max_episode_steps == 500  # Atari's 27000 is not applied to CartPole
    finally:
        env.close()


def test_protocols_reach_envpool():
    cfg = EnvsConfig(num_envs=1, num_threads=1)
    train = ProtocolConfig(noop_max=7, repeat_action_probability=0.25, max_episode_steps=1234)
    env, _ = make_env("Pong", "pixels", cfg, train, seed=0)
    c = env.spec.config
    assert (c.episodic_life, c.reward_clip, c.noop_max, c.max_episode_steps) == (True, True, 7, 1234)
    assert c.repeat_action_probability == pytest.approx(0.25)
    env.close()
    env, _ = make_env("Pong", "pixels", cfg, EvalProtocolConfig(), seed=0)
    c = env.spec.config
    assert (c.episodic_life, c.reward_clip, c.max_episode_steps) == (False, False, 27000)
    env.close()


def test_async_mode_keys_results_by_env_id():
    cfg = EnvsConfig(num_envs=4, batch_size=2, num_threads=1)
    env, spec = make_env("CartPole", "pixels", cfg, ProtocolConfig(), seed=0)
    try:
        assert spec.is_async and spec.batch_size == 2
        env.async_reset()
        seen = set()
        for _ in range(6):
            obs, r, te, tr, info = env.recv()
            assert obs.shape == (2, 4) and len(info["env_id"]) == 2
            seen |= set(info["env_id"].tolist())
            env.send(np.zeros(2, np.int32), info["env_id"])
        assert seen == {0, 1, 2, 3}
    finally:
        env.close()


def test_info_reward_is_unclipped_with_reward_clip():
    """The checked fact behind score tracking: info["reward"] keeps the game's points."""
    env, spec = make_env("SpaceInvaders", "pixels", EnvsConfig(num_envs=4, num_threads=2), ProtocolConfig(), seed=3)
    rng = np.random.default_rng(0)
    env.reset()
    big = 0
    try:
        for _ in range(3000):
            _, r, _, _, info = env.step(rng.integers(0, spec.num_actions, 4).astype(np.int32))
            assert set(np.unique(r)) <= {-1.0, 0.0, 1.0}
            np.testing.assert_array_equal(np.sign(info["reward"]), r)
            np.testing.assert_array_equal(raw_reward_of(r, info), info["reward"])
            big += int((np.abs(info["reward"]) > 1).sum())
            if big >= 3:
                break
    finally:
        env.close()
    assert big >= 3


def test_episodic_life_and_next_step_autoreset():
    """Life loss: terminated, game goes on. Game over: terminated, then a reset step."""
    env, spec = make_env("Breakout", "pixels", EnvsConfig(num_envs=2, num_threads=2), ProtocolConfig(), seed=1)
    rng = np.random.default_rng(0)
    env.reset()
    prev_te = np.zeros(2, bool)
    prev_lives = np.full(2, 5)
    life_losses = game_overs = 0
    try:
        for _ in range(2000):
            _, r, te, tr, info = env.step(rng.integers(0, 4, 2).astype(np.int32))
            for e in range(2):
                if prev_te[e] and prev_lives[e] > 0:  # after a life loss: same game
                    assert info["elapsed_step"][e] > 0
                    life_losses += 1
                if prev_te[e] and prev_lives[e] == 0:  # after game over: the reset step
                    assert info["elapsed_step"][e] == 0 and r[e] == 0 and not te[e]
                    game_overs += 1
            prev_te, prev_lives = te.copy(), info["lives"].copy()
            if game_overs >= 2 and life_losses >= 4:
                break
    finally:
        env.close()
    assert game_overs >= 2 and life_losses >= 4


def test_game_tracker_sums_whole_games_over_lives():
    t = GameTracker(2)
    ids = np.array([0, 1])
    assert t.update(ids, np.zeros(2), np.array([0, 0])) == []  # first reset: no game ended
    assert t.update(ids, np.array([1.0, 5.0]), np.array([1, 1])) == []
    assert t.update(ids, np.array([2.0, 0.0]), np.array([2, 2])) == []  # a life loss changes nothing
    # async-style: only env 0 reports, its reset step ends the game (score 3, 2 agent steps)
    assert t.update(np.array([0]), np.array([0.0]), np.array([0])) == [(0, 3.0, 2)]
    assert t.update(ids, np.array([4.0, 1.0]), np.array([1, 3])) == []
    assert t.update(np.array([1, 0]), np.array([0.0, 0.0]), np.array([0, 0])) == [(1, 6.0, 3), (0, 4.0, 1)]


@pytest.mark.parametrize(
    "raised, words",
    [
        (RuntimeError("Resource temporarily unavailable"), "threads"),
        (MemoryError("std::bad_alloc"), "memory"),
        (TypeError("make() got an unexpected keyword argument 'foo'"), "env option"),
    ],
)
def test_env_creation_failure_is_one_line_saying_what_failed(monkeypatch, raised, words):
    import envpool

    from dqnfast.envs import EnvCreationError

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(envpool, "make", fail)
    with pytest.raises(EnvCreationError) as e:
        make_env("CartPole", "pixels", EnvsConfig(num_envs=2), ProtocolConfig(), seed=0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("envpool could not create 2 CartPole-v1 envs: ")
    assert words in msg and str(raised) in msg


def _record(game: str, protocol: ProtocolConfig, steps: int, seed: int = 7):
    """Random play on 3 synchronous envs through an ActionLog; every observation each env returned."""
    env, spec = make_env(game, "pixels", EnvsConfig(num_threads=1), protocol, seed=seed, num_envs=3, batch_size=3)
    log = ActionLog(3, env=env, results=True)
    seen: list[list[np.ndarray]] = [[], [], []]
    rng = np.random.default_rng(0)
    log.async_reset()
    for k in range(steps + 1):
        obs, _, _, _, info = log.recv()
        for j, e in enumerate(info["env_id"]):
            seen[e].append(obs[j].copy())
        if k < steps:
            log.send(rng.integers(0, spec.num_actions, 3).astype(np.int32), info["env_id"])
    config = dict(env.config)
    env.close()
    return log, [np.stack(s) for s in seen], config, spec


@pytest.mark.parametrize(
    "game, protocol, steps",
    [
        ("CartPole", ProtocolConfig(), 300),  # ~15 games per env: autoresets inside the record
        ("Breakout", EvalProtocolConfig(max_episode_steps=40, repeat_action_probability=0.25), 100),
    ],
)
def test_action_log_replays_reproduce_the_recorded_observations(game, protocol, steps):
    """One record, both replays: each env alone from its own seed (videos), the whole batch (exact resume)."""
    log, seen, config, spec = _record(game, protocol, steps)
    assert log.rows.shape == (steps, 3) and log.rows.dtype == np.uint8
    assert log.rewards.shape == log.elapsed.shape == (steps + 1, 3)
    assert (log.elapsed == 0).sum() > 6  # games ended and restarted inside the record
    for e in range(3):
        env = make_replay_env(spec.task_id, config, e)
        try:
            replayed = np.stack(list(log.replay_env(env, e, 0, steps + 1)))
        finally:
            env.close()
        np.testing.assert_array_equal(replayed, seen[e])
    env, _ = make_env(game, "pixels", EnvsConfig(num_threads=1), protocol, seed=7, num_envs=3, batch_size=3)
    try:
        resumed = ActionLog(3)
        env.async_reset()
        assert resumed.replay(env, log.rows.copy()) == steps
        obs, _, _, _, info = env.recv()
    finally:
        env.close()
    for j, e in enumerate(info["env_id"]):
        np.testing.assert_array_equal(obs[j], seen[e][-1])
    np.testing.assert_array_equal(resumed.rows, log.rows)


def test_action_log_refuses_partial_batches_and_missing_results():
    env, _ = make_env("CartPole", "pixels", EnvsConfig(num_threads=1), ProtocolConfig(), seed=0, num_envs=3)
    try:
        log = ActionLog(3, env=env)
        log.async_reset()
        log.recv()
        with pytest.raises(ValueError, match="synchronous batches of 3 envs, got 2"):
            log.send(np.zeros(2, np.int32), np.arange(2))
    finally:
        env.close()
    assert log.n == 0
    with pytest.raises(ValueError, match="results=True"):
        _ = log.rewards
