"""The decisive replay test: the ring must rebuild exactly what envpool returned.

Real envpool Atari envs (Pong, Breakout; episodic_life on/off; sync ``step`` and async
``send``/``recv`` keyed by ``info["env_id"]``) are driven with random actions. Every returned
result is added to SMALL rings (they wrap many times) exactly as the spec says
(``frames = obs[:, -1]``, ``first = info["elapsed_step"] == 0``, ``action`` = the action sent
that produced the result). The test records each env's trajectory on its own (the full 4-frame
stacks envpool returned, kept for as long as they can still be in a ring, plus rewards, flags,
elapsed steps, lives and actions) and checks, periodically and at the end, for sampled indices
and for ALL valid indices at a few points:

* ``obs`` / ``next_obs`` equal byte-for-byte the stacks envpool returned at the located steps
  (``ring.locate`` maps index -> (env, absolute step));
* ``reward``, ``discount`` and ``action`` equal a straightforward n-step reference computed from
  the recorded trajectory (sum of gamma^(k-1) r, gamma^m or 0 on terminated, bootstrap through
  truncation, never crossing a reset);
* the set of valid indices equals both ``ReferenceRing`` fed the same data and a direct
  computation from the trajectory; no valid index has a reset step after it.

Counters assert that the interesting cases actually happened (life losses, game overs,
truncations, wraps, terminal transitions whose next stack continues the same game, bootstraps
through truncation) so the test cannot pass vacuously.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from dqnfast.replay.reference import ReferenceRing

envpool = pytest.importorskip("envpool")

GAMMA = 0.97


@dataclasses.dataclass(frozen=True)
class EnvCfg:
    name: str
    game: str
    episodic_life: bool
    num_envs: int
    batch_size: int  # == num_envs: sync step(); < num_envs: async send/recv
    max_episode_steps: int
    iterations: int  # number of step()/recv() calls
    expect: tuple  # counters that must be > 0 at the end
    seed: int = 0

    @property
    def is_async(self):
        return self.batch_size < self.num_envs


# ring specs fed from the same env run: (stack, n_step, segment, capacity remainder)
RING_SPECS = [(4, 1, 101, 0), (4, 3, 89, 3), (1, 2, 67, 1)]

COMMON = ("wraps", "checked", "nonzero_reward", "first_after_done")
CONFIGS = [
    EnvCfg("pong-sync-truncation", "Pong-v5", False, 4, 4, 250, 1000, COMMON + ("truncations", "bootstrap_truncation")),
    EnvCfg(
        "pong-async-life-truncation", "Pong-v5", True, 4, 2, 300, 2000, COMMON + ("truncations", "bootstrap_truncation")
    ),
    EnvCfg("pong-sync-life-gameover", "Pong-v5", True, 4, 4, 27000, 1150, COMMON + ("game_overs", "terminal_cut")),
    EnvCfg("pong-async-gameover", "Pong-v5", False, 4, 2, 27000, 2300, COMMON + ("game_overs", "terminal_cut")),
    EnvCfg("breakout-sync", "Breakout-v5", False, 4, 4, 27000, 800, COMMON + ("game_overs", "terminal_cut")),
    EnvCfg(
        "breakout-sync-life",
        "Breakout-v5",
        True,
        4,
        4,
        27000,
        800,
        COMMON + ("game_overs", "life_losses", "terminal_cut", "life_loss_continues"),
    ),
    EnvCfg("breakout-async", "Breakout-v5", False, 4, 2, 27000, 1600, COMMON + ("game_overs", "terminal_cut")),
    EnvCfg(
        "breakout-async-life",
        "Breakout-v5",
        True,
        4,
        2,
        27000,
        1600,
        COMMON + ("game_overs", "life_losses", "terminal_cut", "life_loss_continues"),
    ),
]


class Trajectory:
    """Everything envpool returned, per env, by absolute step (stacks only for recent steps)."""

    def __init__(self, num_envs, max_len, keep):
        self.keep = keep
        self.hi = np.zeros(num_envs, np.int64)
        self.stacks = np.zeros((num_envs, keep, 4, 84, 84), np.uint8)
        shape = (num_envs, max_len)
        self.first = np.zeros(shape, bool)
        self.term = np.zeros(shape, bool)
        self.trunc = np.zeros(shape, bool)
        self.reward = np.zeros(shape, np.float64)
        self.action = np.zeros(shape, np.int64)
        self.elapsed = np.zeros(shape, np.int64)
        self.lives = np.zeros(shape, np.int64)

    def record(self, env_ids, obs, actions, rew, term, trunc, info):
        t = self.hi[env_ids]
        self.stacks[env_ids, t % self.keep] = obs
        self.first[env_ids, t] = info["elapsed_step"] == 0
        self.term[env_ids, t] = term
        self.trunc[env_ids, t] = trunc
        self.reward[env_ids, t] = rew
        self.action[env_ids, t] = actions
        self.elapsed[env_ids, t] = info["elapsed_step"]
        self.lives[env_ids, t] = info["lives"]
        self.hi[env_ids] += 1

    def stack(self, e, t):
        assert self.hi[e] - self.keep <= t < self.hi[e], "stack no longer recorded"
        return self.stacks[e, t % self.keep]

    # --- straightforward n-step reference from the trajectory ---------------------------
    def horizon(self, e, t, n):
        """m of transition (e, t), or None if a needed step has not happened yet."""
        for k in range(1, n + 1):
            j = t + k
            if j >= self.hi[e]:
                return None
            if self.first[e, j]:
                # a reset step is never crossed; k == 1 means t is the last step of an episode
                return k - 1 if k >= 2 else None
            if self.term[e, j] or self.trunc[e, j]:
                return k
        return n

    def valid(self, e, t, seg, n, stack):
        hi = self.hi[e]
        lo = max(0, hi - seg)
        if not lo <= t < hi:
            return False
        if self.horizon(e, t, n) is None:
            return False
        # the observation at t must be rebuildable from stored frames: go back to the
        # episode start or stack-1 steps, whichever comes first
        back = 0
        while back < stack - 1 and not self.first[e, t - back]:
            back += 1
            if t - back < lo:
                return False
        return True

    def valid_indices(self, seg, n, stack):
        out = []
        for e in range(self.hi.shape[0]):
            hi = int(self.hi[e])
            for t in range(max(0, hi - seg), hi):
                if self.valid(e, t, seg, n, stack):
                    out.append(e * seg + t % seg)
        return np.array(sorted(out), dtype=np.int64)

    def expected(self, e, t, n):
        m = self.horizon(e, t, n)
        assert m is not None and m >= 1
        ret = sum(GAMMA ** (k - 1) * self.reward[e, t + k] for k in range(1, m + 1))
        disc = 0.0 if self.term[e, t + m] else GAMMA**m
        return m, ret, disc, int(self.action[e, t + 1])


class RingUnderTest:
    def __init__(self, cfg: EnvCfg, stack, n_step, seg, extra):
        from dqnfast.replay import ReplayRing

        cap = seg * cfg.num_envs + extra
        self.stack, self.n, self.seg = stack, n_step, seg
        # the ring refuses a capacity with a remainder; the reference drops it
        self.ring = ReplayRing(
            seg * cfg.num_envs,
            cfg.num_envs,
            (84, 84),
            frame_dtype=np.uint8,
            stack=stack,
            n_step=n_step,
            gamma=GAMMA,
            seed=cfg.seed,
            num_threads=2,
        )
        self.ref = ReferenceRing(
            cap, cfg.num_envs, (84, 84), np.uint8, stack=stack, n_step=n_step, gamma=GAMMA, seed=cfg.seed
        )
        assert self.ring.segment_capacity == seg

    def add(self, *args):
        self.ring.add(*args)
        self.ref.add(*args)

    def tag(self):
        return f"[stack={self.stack} n={self.n} seg={self.seg}]"


def check_ring(rt: RingUnderTest, traj: Trajectory, counts: Counter, full: bool):
    ring, seg, n = rt.ring, rt.seg, rt.n
    valid = np.asarray(ring.valid_indices())
    assert valid.dtype == np.int64
    np.testing.assert_array_equal(valid, rt.ref.valid_indices(), err_msg=f"vs reference {rt.tag()}")
    if full:
        np.testing.assert_array_equal(valid, traj.valid_indices(seg, n, rt.stack), err_msg=f"vs trajectory {rt.tag()}")
    assert ring.num_valid() == valid.shape[0]
    assert valid.shape[0] > 0
    if full:
        batch = ring.gather(valid)
    else:
        batch = ring.sample(512)
    idx = batch.index.numpy()
    assert np.isin(idx, valid).all(), f"sampled an invalid index {rt.tag()}"
    env, step = (np.asarray(a) for a in ring.locate(idx))
    np.testing.assert_array_equal(env, idx // seg)
    np.testing.assert_array_equal(step % seg, idx % seg)
    assert (step < traj.hi[env]).all() and (step >= traj.hi[env] - seg).all(), "locate: not stored"

    obs = batch.obs.numpy()
    next_obs = batch.next_obs.numpy()
    action = batch.action.numpy()
    reward = batch.reward.numpy()
    discount = batch.discount.numpy()
    assert obs.shape == (idx.shape[0], *((rt.stack, 84, 84) if rt.stack > 1 else (84, 84)))
    for row in range(idx.shape[0]):
        e, t = int(env[row]), int(step[row])
        where = f"{rt.tag()} index {idx[row]} = env {e} step {t} (elapsed {traj.elapsed[e, t]})"
        m, ret, disc, act = traj.expected(e, t, n)
        s_exp = traj.stack(e, t)[4 - rt.stack :]
        s2_exp = traj.stack(e, t + m)[4 - rt.stack :]
        if rt.stack == 1:
            s_exp, s2_exp = s_exp[0], s2_exp[0]
        if not np.array_equal(obs[row], s_exp):
            raise AssertionError(f"obs != envpool stack at {where}")
        if not np.array_equal(next_obs[row], s2_exp):
            raise AssertionError(f"next_obs != envpool stack at step {t + m} for {where}")
        assert action[row] == act, where
        assert abs(reward[row] - ret) <= 1e-5 * max(1.0, abs(ret)), (reward[row], ret, where)
        assert abs(discount[row] - disc) <= 1e-6, (discount[row], disc, where)
        # semantic facts, stated directly
        assert not traj.first[e, t + 1], f"valid index before a reset step: {where}"
        assert not traj.first[e, t + 1 : t + m + 1].any(), f"crosses a reset: {where}"
        counts["checked"] += 1
        counts["nonzero_reward"] += ret != 0
        if m < n:
            counts["short_horizon"] += 1
        if traj.term[e, t + m]:
            counts["terminal_cut"] += 1
            assert discount[row] == 0.0
            nxt = t + m + 1
            if nxt < traj.hi[e] and not traj.first[e, nxt]:
                # life loss: terminal for learning, but the game (and envpool's stack) goes on
                counts["life_loss_continues"] += 1
                assert traj.lives[e, t + m] < traj.lives[e, t + m - 1], where
                np.testing.assert_array_equal(traj.stack(e, nxt)[:3], traj.stack(e, t + m)[1:])
        elif traj.trunc[e, t + m]:
            counts["bootstrap_truncation"] += 1
            assert discount[row] > 0.0
    if full:
        # shared rows (the default where stack > 1 and n = 1: obs and next_obs are views of one
        # window) and separate rows give the same batch
        assert (batch.frames is not None) == (rt.stack > 1 and n == 1)
        if batch.frames is not None:
            sep = ring.gather(valid, out=ring.make_batch(len(valid), shared=False))
            assert sep.frames is None
            np.testing.assert_array_equal(sep.obs.numpy(), obs)
            np.testing.assert_array_equal(sep.next_obs.numpy(), next_obs)
            np.testing.assert_array_equal(batch.frames.numpy()[:, 1:], next_obs)
        # the same batch from the reference
        exp = rt.ref.gather(idx)
        np.testing.assert_array_equal(obs, exp["obs"])
        np.testing.assert_array_equal(next_obs, exp["next_obs"])
        np.testing.assert_allclose(reward, exp["reward"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(discount, exp["discount"], rtol=1e-6, atol=1e-6)


def trajectory_facts(traj: Trajectory, counts: Counter):
    """Facts about envpool the ring relies on, checked on the recorded trajectory."""
    for e in range(traj.hi.shape[0]):
        hi = int(traj.hi[e])
        first, term, trunc = traj.first[e, :hi], traj.term[e, :hi], traj.trunc[e, :hi]
        assert first[0], "the first result of every env is a reset"
        done = term | trunc
        # after a done step: a reset step, unless it was a life loss (terminated, lives > 0)
        after = np.nonzero(done[:-1])[0]
        for t in after:
            if first[t + 1]:
                counts["first_after_done"] += 1
                assert traj.reward[e, t + 1] == 0.0
                if term[t]:
                    counts["game_overs"] += 1
                if trunc[t]:
                    counts["truncations"] += 1
            else:
                assert term[t] and not trunc[t], f"env {e} step {t}: done without reset"
                assert traj.lives[e, t] > 0, f"env {e} step {t}"
                counts["life_losses"] += 1
        # every reset step follows a done step (no spontaneous resets)
        firsts = np.nonzero(first[1:])[0] + 1
        assert done[firsts - 1].all()


# The default run keeps one config per game and mode that together exercise every case (sync and
# async, episodic life on and off, truncation, game over, a life loss that continues the game);
# the other four combinations are in the slow suite.
SLOW = {"pong-sync-truncation", "pong-async-gameover", "breakout-sync-life", "breakout-async"}


@pytest.mark.parametrize(
    "cfg",
    [pytest.param(c, marks=pytest.mark.slow) if c.name in SLOW else c for c in CONFIGS],
    ids=lambda c: c.name,
)
def test_ring_rebuilds_envpool_trajectories(cfg: EnvCfg):
    env = envpool.make(
        cfg.game,
        env_type="gymnasium",
        num_envs=cfg.num_envs,
        batch_size=cfg.batch_size,
        num_threads=2,
        seed=cfg.seed,
        episodic_life=cfg.episodic_life,
        max_episode_steps=cfg.max_episode_steps,
    )
    n_actions = env.action_space.n
    rng = np.random.default_rng(cfg.seed)
    rings = [RingUnderTest(cfg, *spec) for spec in RING_SPECS]
    keep = max(spec[2] for spec in RING_SPECS) + 8
    traj = Trajectory(cfg.num_envs, cfg.iterations + 2, keep)
    counts = Counter()
    last_sent = np.zeros(cfg.num_envs, np.int64)

    def ingest(obs, rew, term, trunc, info):
        env_ids = np.asarray(info["env_id"], dtype=np.int64)
        actions = last_sent[env_ids]
        first = info["elapsed_step"] == 0
        traj.record(env_ids, obs, actions, rew, term, trunc, info)
        for rt in rings:  # exactly as the spec says, with envpool's own arrays (int32 env ids)
            rt.add(info["env_id"], obs[:, -1], actions, rew, term, trunc, first)
        return env_ids

    if cfg.is_async:
        env.async_reset()
    else:
        obs, info = env.reset()
        z = np.zeros(cfg.num_envs, bool)
        ingest(obs, np.zeros(cfg.num_envs, np.float32), z, z, info)
    full_at = {cfg.iterations // 3, (2 * cfg.iterations) // 3}
    for it in range(cfg.iterations):
        if cfg.is_async:
            env_ids = ingest(*env.recv())
            counts["async_unordered"] += bool(np.any(np.diff(env_ids) < 0))
            actions = rng.integers(0, n_actions, size=env_ids.shape[0])
            last_sent[env_ids] = actions
            env.send(actions, env_ids.astype(np.int32))
        else:
            actions = rng.integers(0, n_actions, size=cfg.num_envs)
            last_sent[:] = actions
            ingest(*env.step(actions))
        if it % 150 == 149 or it in full_at:
            for rt in rings:
                if rt.ring.num_valid():
                    check_ring(rt, traj, counts, full=it in full_at)
    for rt in rings:
        check_ring(rt, traj, counts, full=True)
    if cfg.is_async:
        env.recv()  # drain
    env.close()

    trajectory_facts(traj, counts)
    # wraps: every env stepped through each ring several times
    for rt in rings:
        assert traj.hi.min() >= 3 * rt.seg, (traj.hi, rt.tag())
    counts["wraps"] = int(traj.hi.min() // 101)
    if any(rt.n > 1 for rt in rings) and (counts["game_overs"] or counts["truncations"]):
        assert counts["short_horizon"] > 0
    expect = cfg.expect + (("async_unordered",) if cfg.is_async else ())
    missing = [k for k in expect if counts[k] == 0]
    assert not missing, f"not exercised: {missing}; counts={dict(counts)}"
    if not cfg.episodic_life:
        assert counts["life_losses"] == 0
    print(cfg.name, dict(counts))
