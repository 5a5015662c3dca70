"""Prioritized replay: the C++ sum-tree sampler, importance weights, priority feedback, training.

The C++ sampler is checked against definitions computed independently in NumPy
(``dqnfast.replay.reference.PrioritizedReference.probabilities``: p^alpha / sum over the valid
slots, no tree), its draws against those probabilities by a chi-square test with enough draws
that a real bias fails, and the learner's per-sample TD errors and weighted loss by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats
from test_dqn import ACTION, DISCOUNT, NEXT_OBS, OBS, REWARD, W_ONLINE, W_TARGET, Y_DOUBLE, linear
from test_replay_property import Scenario, scenarios

from dqnfast.agent.dqn import update_step
from dqnfast.replay import ReplayFileError, ReplayRing
from dqnfast.replay.reference import PrioritizedReference, ReferenceRing, SumTree


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg.strip() and "\n" not in msg.strip(), msg
    return msg


def _chain(ring, steps: int, env_ids=(0,), start: int = 0) -> None:
    """``steps`` adds of one long episode per env (first only at step 0): every old enough step is valid."""
    ids = np.asarray(env_ids, np.int64)
    k = len(ids)
    for t in range(start, start + steps):
        ring.add(
            ids,
            np.full((k, 2), t % 256, np.uint8),
            np.full(k, t % 3),
            np.full(k, 1.0, np.float32),
            np.zeros(k, bool),
            np.zeros(k, bool),
            np.full(k, t == 0),
        )


def _known_ring(alpha: float = 0.6, eps: float = 1e-6, seed: int = 0):
    """One env, 64 slots, stack 1, n 1: after 64 adds slots 0..62 are valid, at priorities 1..63 (+ eps)."""
    ring = ReplayRing(64, 1, (2,), stack=1, n_step=1, seed=seed, prioritized=True, alpha=alpha, priority_eps=eps)
    _chain(ring, 64)
    valid = ring.valid_indices()
    np.testing.assert_array_equal(valid, np.arange(63))
    td = np.arange(1, 64, dtype=np.float32)  # |TD errors| exact in float32
    _, gen = ring.locate(valid)
    assert ring.update_priorities(valid, td, gen) == 63
    p = td.astype(np.float64) + eps
    np.testing.assert_array_equal(ring.priorities(valid), p)
    return ring, valid, p


# ------------------------------------------------------------------------------- sampling
def test_draw_frequencies_match_priorities_chi_square():
    alpha = 0.6
    ring, valid, p = _known_ring(alpha)
    expected = p**alpha / (p**alpha).sum()
    np.testing.assert_allclose(ring.probabilities(valid), expected, rtol=1e-12)
    counts = np.zeros(64, np.int64)
    out = ring.make_batch(1000)
    for _ in range(400):  # 400k draws: a 2% bias in one bin is ~4 standard deviations
        np.add.at(counts, ring.sample(1000, out=out).index.numpy(), 1)
    assert counts[63] == 0  # the write head is never drawn
    n = counts.sum()
    assert stats.chisquare(counts[:63], expected * n).pvalue > 1e-3
    # the test has power: the same counts refute a slightly different exponent and uniform draws
    wrong = p**0.55 / (p**0.55).sum()
    assert stats.chisquare(counts[:63], wrong * n).pvalue < 1e-6
    assert stats.chisquare(counts[:63], np.full(63, n / 63)).pvalue < 1e-6


def test_importance_weights_equal_a_numpy_reference():
    ring, valid, p = _known_ring(alpha=0.7)
    idx = np.array([0, 5, 5, 17, 62, 40, 3])
    for beta in (0.0, 0.4, 1.0):
        b = ring.gather(idx, beta=beta)
        prob = p[idx] ** 0.7 / (p**0.7).sum()
        w = (len(valid) * prob) ** -beta
        np.testing.assert_allclose(b.weight.numpy(), (w / w.max()).astype(np.float32), rtol=1e-6)
        assert b.weight.dtype == torch.float32 and b.weight.max() == 1.0
    s = ring.sample(256, beta=0.5)
    prob = p[s.index.numpy()] ** 0.7 / (p**0.7).sum()
    w = (len(valid) * prob) ** -0.5
    np.testing.assert_allclose(s.weight.numpy(), w / w.max(), rtol=1e-6)


def test_uniform_ring_has_no_weights_and_refuses_priority_updates():
    ring = ReplayRing(64, 1, (2,), stack=1, n_step=1)
    _chain(ring, 20)
    b = ring.sample(8)
    assert b.weight is None and b.generation is not None
    with pytest.raises(ValueError, match="prioritized=True") as ei:
        ring.update_priorities(b.index.numpy(), np.ones(8), b.generation.numpy())
    _one_line(ei)


def test_new_transitions_start_at_the_largest_priority_reported():
    ring, valid, p = _known_ring()
    assert ring.max_priority == p.max()
    _chain(ring, 1, start=64)  # overwrites slot 0 with step 64
    assert ring.priorities([0])[0] == p.max()
    assert ring.probabilities([0])[0] == 0.0  # not valid yet: its successor is not stored


# ------------------------------------------------------------------------------- staleness
def test_a_stale_update_after_a_wrap_does_not_change_the_new_slot():
    ring = ReplayRing(32, 2, (2,), stack=1, n_step=1, seed=1, prioritized=True, alpha=1.0, priority_eps=1e-6)
    _chain(ring, 20, env_ids=(0, 1))
    b = ring.sample(8)
    idx, gen = b.index.numpy().copy(), b.generation.numpy().copy()
    np.testing.assert_array_equal(gen, ring.locate(idx)[1])
    _chain(ring, 16, env_ids=(0, 1), start=20)  # a whole segment more: every slot holds a new step
    before = ring.priorities(idx).copy()
    assert ring.update_priorities(idx, np.full(8, 1e6), gen) == 0
    np.testing.assert_array_equal(ring.priorities(idx), before)
    assert ring.max_priority < 1e6
    # the same slots with their current generations are updated
    _, now = ring.locate(idx)
    assert ring.update_priorities(idx, np.full(8, 5.0), now) == 8
    np.testing.assert_allclose(ring.priorities(idx), 5.0 + 1e-6)
    # a slot never written has no generation to match, not even -1
    fresh = ReplayRing(64, 1, (2,), stack=1, n_step=1, prioritized=True)
    _chain(fresh, 10)
    assert fresh.update_priorities([40], [5.0], [-1]) == 0 and fresh.priorities([40])[0] == 0.0


@pytest.mark.parametrize(
    "priorities, match",
    [
        (np.array([1.0, -0.5]), "negative"),
        (np.array([1.0, np.nan]), "finite"),
        (np.array([1.0, np.inf]), "finite"),
        (np.array([1.0]), "one priority per index"),
    ],
)
def test_bad_priority_updates_are_refused_in_one_line_and_change_nothing(priorities, match):
    ring, valid, p = _known_ring()
    idx = np.array([3, 4])
    _, gen = ring.locate(idx)
    with pytest.raises(ValueError, match=match) as ei:
        ring.update_priorities(idx, priorities, gen)
    _one_line(ei)
    np.testing.assert_allclose(ring.priorities(idx), p[idx])
    with pytest.raises(ValueError, match="out of range") as ei:
        ring.update_priorities([3, 64], [1.0, 1.0], [3, 0])
    _one_line(ei)


def test_config_of_the_sampler_is_checked():
    for kw, match in (
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(priority_eps=0.0), "priority_eps"),
        (dict(priority_eps=float("nan")), "priority_eps"),
    ):
        with pytest.raises(ValueError, match=match) as ei:
            ReplayRing(64, 1, (2,), stack=1, n_step=1, prioritized=True, **kw)
        _one_line(ei)


# --------------------------------------------------------- property test against the reference
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios(max_adds=80), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_sampler_matches_a_numpy_reference_through_adds_resets_wraps_and_updates(sc: Scenario, alpha, seed):
    """After every step of a random mix of adds (episode ends, resets, wraps) and priority reports
    (fresh and stale), the C++ ring's P(i) equals the NumPy definition for every slot, and
    sampling never returns a slot the reference calls invalid."""
    eps = 1e-3
    ring = ReplayRing(
        sc.seg * sc.num_envs,
        sc.num_envs,
        sc.frame_shape,
        sc.frame_dtype,
        stack=sc.stack,
        n_step=sc.n_step,
        gamma=sc.gamma,
        seed=sc.seed,
        num_threads=1,
        prioritized=True,
        alpha=alpha,
        priority_eps=eps,
    )
    ref = PrioritizedReference(
        ReferenceRing(sc.seg * sc.num_envs, sc.num_envs, sc.frame_shape, sc.frame_dtype, sc.stack, sc.n_step, sc.gamma),
        alpha=alpha,
        eps=eps,
    )
    rng = np.random.default_rng(seed)
    drawn: list[tuple[np.ndarray, np.ndarray]] = []  # earlier batches: reported late, some after a wrap
    slots = np.arange(ring.capacity)
    for i, a in enumerate(sc.adds):
        ring.add(**a)
        ref.add(**a)
        valid = ref.ring.valid_indices()
        if valid.size:
            b = ring.sample(int(rng.integers(1, 9)), beta=float(rng.random()))
            assert np.isin(b.index.numpy(), valid).all(), f"drew an invalid slot after add {i}"
            drawn.append((b.index.numpy().copy(), b.generation.numpy().copy()))
        if drawn and rng.random() < 0.6:
            idx, gen = drawn.pop(int(rng.integers(len(drawn))))
            td = (rng.exponential(2.0, idx.size) * (rng.random(idx.size) < 0.9)).astype(np.float32)  # some zeros
            applied = ref.update(idx, td, gen)
            assert ring.update_priorities(idx, td, gen) == int(applied.sum())
        got = ring.probabilities(slots)
        if valid.size:
            np.testing.assert_allclose(got, ref.probabilities(), rtol=1e-9, atol=1e-15, err_msg=f"after add {i}")
            np.testing.assert_allclose(ring.priorities(slots), ref.priority, rtol=1e-12)
        else:
            assert not got.any()


def test_numpy_sum_tree_finds_the_leaf_of_each_point():
    rng = np.random.default_rng(0)
    w = rng.random(37) * (rng.random(37) < 0.7)
    tree = SumTree(37)
    tree.assign(w)
    tree.set([3, 3, 10], [0.0, 2.5, 0.0])  # the last of repeated leaves wins
    w[3], w[10] = 2.5, 0.0
    assert tree.total == pytest.approx(w.sum())
    edges = np.concatenate([[0.0], np.cumsum(w)])
    u = rng.random(10_000) * w.sum()
    np.testing.assert_array_equal(tree.find(u), np.searchsorted(edges, u, side="right") - 1)
    assert (w[tree.find(np.array([w.sum(), w.sum() * 2]))] > 0).all()  # beyond the total: a positive leaf


# ------------------------------------------------------------------------------- save / load
def test_save_load_keeps_priorities_max_and_draws(tmp_path):
    ring, valid, p = _known_ring(alpha=0.5, eps=1e-4, seed=3)
    ring.sample(10)
    loaded = ReplayRing.load(ring.save(tmp_path / "per.npz"))
    assert loaded.prioritized and loaded.alpha == 0.5 and loaded.priority_eps == 1e-4
    assert loaded.max_priority == ring.max_priority
    slots = np.arange(64)
    np.testing.assert_array_equal(loaded.priorities(slots), ring.priorities(slots))
    np.testing.assert_array_equal(loaded.probabilities(slots), ring.probabilities(slots))
    for _ in range(3):
        b1, b2 = ring.sample(32, beta=0.6), loaded.sample(32, beta=0.6)
        assert torch.equal(b1.index, b2.index) and torch.equal(b1.weight, b2.weight)
    # a new exponent at load re-weighs the same priorities
    other = ReplayRing.load(tmp_path / "per.npz", alpha=1.0)
    np.testing.assert_allclose(other.probabilities(valid), p / p.sum(), rtol=1e-12)


def test_a_uniform_file_loads_as_uniform_and_a_forged_priority_is_refused(tmp_path):
    uni = ReplayRing(64, 1, (2,), stack=1, n_step=1)
    _chain(uni, 30)
    again = ReplayRing.load(uni.save(tmp_path / "u.npz"))
    assert not again.prioritized and again.sample(4).weight is None
    ring, _, _ = _known_ring()
    path = ring.save(tmp_path / "p.npz")
    with np.load(path) as z:
        entries = {k: z[k] for k in z.files}
    entries["priorities"] = entries["priorities"].copy()
    entries["priorities"][0, 5] = -1.0
    with open(tmp_path / "bad.npz", "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(ReplayFileError, match="checksum") as ei:
        ReplayRing.load(tmp_path / "bad.npz")
    _one_line(ei)
    meta = json.loads(str(entries["meta"]))
    assert meta["version"] >= 3 and meta["sampler"]["kind"] == "prioritized"  # version 3 added the sampler


# ------------------------------------------------------------------------------- learner
def test_learner_returns_per_sample_td_errors_by_hand():
    online, target = linear(W_ONLINE), linear(W_TARGET)
    opt = torch.optim.SGD(online.parameters(), lr=0.0)
    m = update_step(online, target, opt, OBS, ACTION, REWARD, NEXT_OBS, DISCOUNT, double=True)
    # Q_online(s, a) = [0.5, 1.0] against y = [1.99, 0.5] (tests/test_dqn.py's hand computation)
    torch.testing.assert_close(m["td_abs"], (torch.tensor([0.5, 1.0]) - Y_DOUBLE).abs())
    assert m["td_abs"].shape == (2,) and not m["td_abs"].requires_grad


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_weighted_loss_is_weights_times_the_elementwise_loss(loss):
    weight = torch.tensor([0.25, 1.0])
    q = torch.tensor([0.5, 1.0])
    d = q - Y_DOUBLE
    elementwise = torch.where(d.abs() > 1, d.abs() - 0.5, d**2 / 2) if loss == "huber" else d**2
    grads = []
    for w in (weight, None):
        online, target = linear(W_ONLINE), linear(W_TARGET)
        opt = torch.optim.SGD(online.parameters(), lr=0.0)
        m = update_step(online, target, opt, OBS, ACTION, REWARD, NEXT_OBS, DISCOUNT, w, double=True, loss=loss)
        grads.append(online.weight.grad.clone())
        expected = (weight * elementwise).mean() if w is not None else elementwise.mean()
        torch.testing.assert_close(m["loss"], expected)
    assert not torch.equal(grads[0], grads[1])  # the weights reach the gradient


# ------------------------------------------------------------------------------- feedback
def test_prefetcher_reports_priorities_one_update_later_and_saves_the_pending_one():
    ring, valid, p = _known_ring()
    pf = ring.prefetcher(16, "cpu", beta0=0.4, beta_steps=100)
    b1 = pf.next(step=0)
    idx1 = b1.index.numpy().copy()
    pf.report(torch.full((16,), 7.0))
    np.testing.assert_allclose(ring.priorities(idx1), p[idx1])  # not yet: one update later
    pf.next(step=50)
    state = pf.state_dict()
    assert len(state["pending"]) == 1
    pf.report(torch.full((16,), 9.0))
    np.testing.assert_array_equal(ring.priorities(idx1), 7.0 + 1e-6)
    # a prefetcher restored from the state applies the same pending report
    ring2, _, _ = _known_ring()
    pf2 = ring2.prefetcher(16, "cpu")
    pf2.load_state_dict(state)
    pf2.next()
    pf2.report(torch.zeros(16))
    np.testing.assert_allclose(ring2.priorities(idx1), 7.0 + 1e-6)
    assert pf.beta(0) == pytest.approx(0.4) and pf.beta(50) == pytest.approx(0.7) and pf.beta(500) == 1.0


def test_a_non_finite_report_is_its_own_error_and_changes_no_priority():
    """A diverged update's |TD errors| (NaN, inf) are told apart from a caller's mistake, so the loop can say the
    run diverged; the ring keeps the priorities it had."""
    from dqnfast.replay import NonFinitePriority

    ring, valid, p = _known_ring()
    pf = ring.prefetcher(16, "cpu")
    pf.next()
    pf.report(torch.full((16,), math.nan))  # queued: applied with the next report
    before = ring.priorities(valid)
    pf.next()
    with pytest.raises(NonFinitePriority) as ei:
        pf.report(torch.ones(16))
    assert "nan" in _one_line(ei)
    np.testing.assert_array_equal(ring.priorities(valid), before)


def test_a_uniform_prefetcher_ignores_reports():
    ring = ReplayRing(64, 1, (2,), stack=1, n_step=1)
    _chain(ring, 20)
    pf = ring.prefetcher(4, "cpu")
    pf.next()
    pf.report(torch.ones(4))
    assert pf.state_dict() == {"pending": []}


# ------------------------------------------------------------------------------- training
def test_cartpole_training_with_prioritized_replay_runs_through_the_cli(train_in_process, tmp_path):
    out = tmp_path / "run"  # the CLI's entry point, in this process
    code, err = train_in_process(
        "preset=cartpole",
        "replay.prioritized=true",
        "algo.total_steps=2000",
        "algo.learning_starts=500",
        "logger.progress=false",
        "envs.eval.episodes=2",
        "envs.eval.num_envs=2",
        "envs.eval.max_episode_steps=100",
        "replay.save=true",
        "logger.checkpoint_every=1000",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 0, err[-3000:]
    assert (out / "eval.json").exists() and (out / "metrics.csv").exists()
    saved = sorted(out.glob("replay_*.npz"))
    assert saved
    ring = ReplayRing.load(saved[-1])
    assert ring.prioritized and ring.max_priority > 1.0  # the learner's TD errors came back


def test_a_diverging_prioritized_run_stops_in_one_line_and_keeps_its_last_good_checkpoint(train_in_process, tmp_path):
    """preset=rainbow turns gradient clipping off: NaN |TD errors| reach the priority update first, and
    must end the run as the divergence guard does, not as a priority the ring refuses (the CLI's entry
    point, in this process)."""
    from dqnfast.checkpoint import load_checkpoint

    out = tmp_path / "run"
    code, stderr = train_in_process(
        "preset=rainbow",
        "game=CartPole",
        "algo.total_steps=3000",
        "algo.learning_starts=500",
        "replay.capacity=10000",
        "optim.lr=1e20",
        "logger.checkpoint_every=400",  # one checkpoint before learning starts, the next after the blow-up
        "logger.progress=false",
        "envs.eval.episodes=1",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    err = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "training diverged at agent step" in err[0], stderr[-3000:]
    assert "not finite" in err[0] and "optim.lr" in err[0] and "is kept" in err[0], err[0]
    assert not (out / "eval.json").exists()
    ck = load_checkpoint(out / "checkpoint.pt")
    assert 0 < ck["counters"]["env_steps"] <= 500 and ck["counters"]["updates"] <= 1
    assert all(torch.isfinite(t).all() for t in ck["online"].values())
