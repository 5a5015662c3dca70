"""API contract of dqnfast.replay.ReplayRing: errors, output buffers, shapes, save/load.

Bad input must raise a clear Python exception (ValueError & co. with a one-line message),
never crash or corrupt the ring; memory that does not fit is refused before allocating;
``out=`` buffers are written in place; save/load round-trips contents, cursors and the RNG.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dqnfast.replay import ReplayRing
from dqnfast.replay.reference import ReferenceRing

SEG = 16
E = 3


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    return msg


def _episode_adds(num_envs=E, steps=40, frame_shape=(84, 84), dtype=np.uint8, seed=0, p_done=0.08):
    """Realistic envpool-like adds for all envs per call (reset step after each done)."""
    rng = np.random.default_rng(seed)
    need_reset = np.ones(num_envs, bool)
    out = []
    for _ in range(steps):
        env_ids = rng.permutation(num_envs).astype(np.int64)
        if dtype == np.uint8:
            obs = rng.integers(0, 256, size=(num_envs, 4, *frame_shape), dtype=np.uint8)
        else:
            obs = rng.standard_normal(size=(num_envs, 4, *frame_shape)).astype(dtype)
        first = need_reset[env_ids].copy()
        u = rng.random(num_envs)
        term = ~first & (u < p_done / 2)
        trunc = ~first & (u >= p_done / 2) & (u < p_done)
        rew = np.where(first, 0.0, rng.integers(-1, 2, num_envs)).astype(np.float32)
        need_reset[env_ids] = term | trunc
        out.append((env_ids, obs[:, -1], rng.integers(0, 6, num_envs), rew, term, trunc, first))
    return out


def _filled(seed=0, stack=4, n_step=3, frame_shape=(84, 84), dtype=np.uint8, steps=40):
    ring = ReplayRing(SEG * E, E, frame_shape, dtype, stack=stack, n_step=n_step, gamma=0.9, seed=seed, num_threads=2)
    ref = ReferenceRing(SEG * E, E, frame_shape, dtype, stack=stack, n_step=n_step, gamma=0.9)
    for a in _episode_adds(steps=steps, frame_shape=frame_shape, dtype=dtype, seed=seed):
        ring.add(*a)
        ref.add(*a)
    assert ring.num_valid() > 0
    return ring, ref


def _assert_batch_equal(b1, b2):
    for name in ("obs", "next_obs", "action", "reward", "discount", "index"):
        t1, t2 = getattr(b1, name), getattr(b2, name)
        assert t1.dtype == t2.dtype and t1.shape == t2.shape, name
        assert torch.equal(t1, t2), name


def _assert_matches_ref(batch, ref):
    exp = ref.gather(batch.index.numpy())
    np.testing.assert_array_equal(batch.obs.numpy(), exp["obs"])
    np.testing.assert_array_equal(batch.next_obs.numpy(), exp["next_obs"])
    np.testing.assert_array_equal(batch.action.numpy(), exp["action"])
    np.testing.assert_allclose(batch.reward.numpy(), exp["reward"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.discount.numpy(), exp["discount"], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- constructor
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(capacity=0),
        dict(capacity=-100),
        dict(num_envs=0),
        dict(num_envs=-1),
        dict(stack=0),
        dict(stack=-4),
        dict(n_step=0),
        dict(n_step=-1),
    ],
    ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()),
)
def test_non_positive_sizes_rejected(kwargs):
    args = dict(capacity=1000, num_envs=4, frame_shape=(84, 84), stack=4, n_step=3)
    args.update(kwargs)
    with pytest.raises(ValueError) as ei:
        ReplayRing(**args)
    msg = _one_line(ei)
    assert list(kwargs)[0] in msg


@pytest.mark.parametrize("capacity,num_envs", [(3, 4), (4, 4), (8, 4)])
def test_segment_too_small_rejected(capacity, num_envs):
    # capacity // num_envs slots per env cannot hold stack 4 + 3-step transitions
    with pytest.raises(ValueError) as ei:
        ReplayRing(capacity, num_envs, (84, 84), stack=4, n_step=3)
    _one_line(ei)


def test_capacity_beyond_ram_refused_before_allocating():
    t0 = time.perf_counter()
    with pytest.raises(MemoryError) as ei:
        ReplayRing(10**12, 8, (84, 84))
    assert time.perf_counter() - t0 < 2.0
    msg = _one_line(ei)
    assert msg.count("GB") >= 2, msg  # needed and available, in GB
    assert "avail" in msg.lower()


def test_capacity_twice_ram_refused():
    """A ring that lazy overcommit would let through (2x RAM) must still be refused."""
    from dqnfast.replay import available_memory_bytes

    cap = 4 * (int(2 * available_memory_bytes() / (84 * 84)) // 4 + 250)
    with pytest.raises(MemoryError) as ei:
        ReplayRing(cap, 4, (84, 84))
    assert _one_line(ei).count("GB") >= 2


def test_impossible_allocation_without_check_is_an_exception_not_a_crash():
    code = (
        "import numpy as np\n"
        "from dqnfast.replay import ReplayRing\n"
        "try:\n"
        "    ReplayRing(10**13, 8, (84, 84), check_memory=False)\n"
        "except (MemoryError, ValueError, RuntimeError, OverflowError) as e:\n"
        "    print('RAISED', type(e).__name__)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "RAISED" in p.stdout, (p.returncode, p.stdout, p.stderr[-2000:])


# ---------------------------------------------------------------------------- add
def _good_add(k=2, shape=(84, 84), dtype=np.uint8):
    return dict(
        env_ids=np.arange(k),
        frames=np.zeros((k, *shape), dtype),
        actions=np.zeros(k, np.int64),
        rewards=np.zeros(k, np.float32),
        terminated=np.zeros(k, bool),
        truncated=np.zeros(k, bool),
        first=np.ones(k, bool),
    )


BAD_ADDS = {
    "frames float32 into uint8 ring": dict(frames=np.zeros((2, 84, 84), np.float32)),
    "frames int64 into uint8 ring": dict(frames=np.zeros((2, 84, 84), np.int64)),
    "frame shape 84x83": dict(frames=np.zeros((2, 84, 83), np.uint8)),
    "frame flattened": dict(frames=np.zeros((2, 84 * 84), np.uint8)),
    "full stack instead of newest frame": dict(frames=np.zeros((2, 4, 84, 84), np.uint8)),
    "no batch axis": dict(frames=np.zeros((84, 84), np.uint8)),
    "env id == num_envs": dict(env_ids=np.array([0, E])),
    "env id negative": dict(env_ids=np.array([-1, 0])),
    "duplicate env ids": dict(env_ids=np.array([1, 1])),
    "float env ids": dict(env_ids=np.array([0.0, 1.0])),
    "frames K mismatch": dict(frames=np.zeros((3, 84, 84), np.uint8)),
    "actions length": dict(actions=np.zeros(3, np.int64)),
    "rewards length": dict(rewards=np.zeros(1, np.float32)),
    "terminated length": dict(terminated=np.zeros(3, bool)),
    "truncated length": dict(truncated=np.zeros(1, bool)),
    "first length": dict(first=np.ones(3, bool)),
    # stored as int32: 2**33 + 5 would come back as 5
    "action beyond int32": dict(actions=np.array([2**33 + 5, 0])),
    "negative action": dict(actions=np.array([0, -1])),
    "float actions": dict(actions=np.array([0.0, 1.0])),
    "2-D actions": dict(actions=np.zeros((2, 1), np.int64)),
    "NaN reward": dict(rewards=np.array([0.0, np.nan], np.float32)),
    "infinite reward": dict(rewards=np.array([np.inf, 0.0], np.float32)),
    "reward beyond float32": dict(rewards=np.array([1e300, 0.0])),
    "2-D rewards": dict(rewards=np.zeros((2, 1), np.float32)),
    "2-D env ids": dict(env_ids=np.array([[0], [1]])),
    "2-D terminated": dict(terminated=np.zeros((2, 1), bool)),
}


@pytest.mark.parametrize("case", list(BAD_ADDS), ids=list(BAD_ADDS))
def test_bad_add_raises_clear_error_and_changes_nothing(case):
    ring, ref = _filled(steps=10)
    before_len, before_valid = len(ring), ring.valid_indices().copy()
    args = _good_add()
    args.update(BAD_ADDS[case])
    with pytest.raises(ValueError) as ei:
        ring.add(**args)
    _one_line(ei)
    # a rejected add must not have written anything
    assert len(ring) == before_len
    np.testing.assert_array_equal(ring.valid_indices(), before_valid)
    _assert_matches_ref(ring.gather(before_valid), ref)
    ring.add(**_good_add())  # and the ring still works


def test_action_count_bounds_actions():
    ring = ReplayRing(SEG * E, E, (84, 84), stack=4, n_step=3, num_actions=6)
    with pytest.raises(ValueError) as ei:
        ring.add(**dict(_good_add(), actions=np.array([0, 6])))
    assert "6" in _one_line(ei)
    assert len(ring) == 0
    ring.add(**dict(_good_add(), actions=np.array([5, 0])))
    assert len(ring) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(capacity=1001, num_envs=4),  # the remainder used to vanish silently
        dict(seed=-1),
        dict(seed=2**64),
        dict(seed=1.5),
        dict(num_threads=2**40),
        dict(num_envs=2**40),
        dict(capacity=2**70),
        dict(num_actions=0),
        dict(num_actions=-3),
        dict(frame_shape=(84, "x")),
        dict(frame_dtype="not a dtype"),
        dict(frames_device="not a device"),
        dict(frames_device="meta"),
    ],
    ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()),
)
def test_out_of_range_construction_is_one_line_value_error(kwargs):
    args = dict(capacity=1000, num_envs=4, frame_shape=(84, 84), stack=4, n_step=3, check_memory=False)
    args.update(kwargs)
    with pytest.raises(ValueError) as ei:
        ReplayRing(**args)
    _one_line(ei)


def test_capacity_not_divisible_names_the_nearest_multiples():
    with pytest.raises(ValueError) as ei:
        ReplayRing(1001, 4, (84, 84))
    msg = _one_line(ei)
    assert "1000" in msg and "1004" in msg, msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("check_memory", [True, False])
def test_cuda_frames_without_cuda_is_one_line_value_error(check_memory):
    with pytest.raises(ValueError) as ei:
        ReplayRing(SEG * E, E, (84, 84), frames_device="cuda", check_memory=check_memory)
    assert "cuda" in _one_line(ei).lower()


@pytest.mark.parametrize("value", [-1, 2**64, 1.0, True])
def test_rng_state_out_of_range_is_one_line_value_error(value):
    ring, _ = _filled(steps=10)
    before = ring.rng_state
    with pytest.raises(ValueError) as ei:
        ring.rng_state = value
    _one_line(ei)
    assert ring.rng_state == before
    ring.rng_state = 2**64 - 1  # the whole uint64 range is accepted
    assert ring.rng_state == 2**64 - 1


def test_huge_batch_is_one_line_value_error():
    ring, _ = _filled()
    for call in (lambda: ring.sample(10**12), lambda: ring.make_batch(10**12)):
        with pytest.raises(ValueError) as ei:
            call()
        assert "batch" in _one_line(ei)
    assert len(ring.sample(8)) == 8


@pytest.mark.parametrize(
    "indices",
    [
        np.array([1.0, 2.0]),  # used to be truncated to integers
        np.array([1.7]),
        np.array([[1, 2], [3, 4]]),  # used to be flattened
        np.array([True, False]),
        np.array([2**64 - 1], np.uint64),  # would wrap to -1
    ],
)
def test_gather_and_locate_refuse_non_integer_or_2d_indices(indices):
    ring, _ = _filled()
    for call in (ring.gather, ring.locate):
        with pytest.raises(ValueError) as ei:
            call(indices)
        _one_line(ei)


def test_gather_accepts_lists_and_unsigned_indices():
    ring, ref = _filled()
    v = ring.valid_indices()[:4]
    _assert_matches_ref(ring.gather([int(i) for i in v]), ref)
    _assert_matches_ref(ring.gather(v.astype(np.uint32)), ref)


def test_strided_and_reversed_frames_are_stored_correctly():
    rng = np.random.default_rng(1)
    ring = ReplayRing(8 * 2, 2, (5, 7), np.uint8, stack=2, n_step=1, gamma=0.5)
    ref = ReferenceRing(8 * 2, 2, (5, 7), np.uint8, stack=2, n_step=1, gamma=0.5)
    for step in range(12):
        obs = rng.integers(0, 256, size=(2, 4, 5, 7), dtype=np.uint8)
        frames = obs[:, -1] if step % 2 else obs[::-1, -1]  # strided axis 0 / negative stride
        ids = np.array([0, 1])
        a = (
            ids,
            frames,
            np.array([step, step]),
            np.ones(2, np.float32),
            np.zeros(2, bool),
            np.zeros(2, bool),
            np.array([step == 0] * 2),
        )
        ring.add(*a)
        ref.add(*a)
    v = ref.valid_indices()
    np.testing.assert_array_equal(ring.valid_indices(), v)
    _assert_matches_ref(ring.gather(v), ref)


# ---------------------------------------------------------------------------- sample / gather
def test_sample_before_any_valid_transition():
    ring = ReplayRing(SEG * E, E, (84, 84), stack=4, n_step=3)
    assert ring.num_valid() == 0 and len(ring) == 0
    with pytest.raises(ValueError) as ei:
        ring.sample(8)
    _one_line(ei)
    # a couple of steps: still nothing valid (no step after the write head)
    ring.add(**_good_add(E))
    with pytest.raises(ValueError):
        ring.sample(8)
    assert ring.num_valid() == 0
    assert ring.valid_indices().shape == (0,)


def test_gather_invalid_index_raises():
    ring, ref = _filled()
    valid = ring.valid_indices()
    cap = ring.segment_capacity * ring.num_envs
    invalid = np.setdiff1d(np.arange(cap), valid)
    assert invalid.shape[0] > 0
    for bad in ([int(invalid[0])], [int(valid[0]), int(invalid[-1])], [-1], [cap], [10**15]):
        with pytest.raises(ValueError) as ei:
            ring.gather(np.array(bad, dtype=np.int64))
        _one_line(ei)
    _assert_matches_ref(ring.gather(valid), ref)  # still fine afterwards


def test_gather_empty_indices_gives_empty_batch():
    ring, _ = _filled()
    try:
        b = ring.gather(np.zeros(0, np.int64))
    except ValueError:
        return  # refusing an empty request is acceptable too
    assert len(b) == 0 and b.index.shape == (0,) and b.obs.shape[0] == 0, (
        f"gather([]) returned {len(b)} row(s): {b.index.tolist()}, discount {b.discount.tolist()}"
    )


def test_sample_batch_dtypes_and_shapes():
    ring, ref = _filled()
    b = ring.sample(32)
    assert b.obs.shape == (32, 4, 84, 84) and b.obs.dtype == torch.uint8
    assert b.next_obs.shape == (32, 4, 84, 84) and b.next_obs.dtype == torch.uint8
    assert b.action.shape == (32,) and b.action.dtype == torch.int64
    assert b.reward.shape == (32,) and b.reward.dtype == torch.float32
    assert b.discount.shape == (32,) and b.discount.dtype == torch.float32
    assert b.index.shape == (32,) and b.index.dtype == torch.int64
    assert b.obs.device.type == "cpu"
    _assert_matches_ref(b, ref)


@pytest.mark.parametrize("frame_shape,dtype", [((84, 84), np.uint8), ((128,), np.uint8), ((4,), np.float32)])
def test_stack_one_obs_has_frame_shape(frame_shape, dtype):
    ring, ref = _filled(stack=1, n_step=1, frame_shape=frame_shape, dtype=dtype)
    assert tuple(ring.obs_shape) == frame_shape
    tdt = torch.uint8 if dtype == np.uint8 else torch.float32
    mb = ring.make_batch(5)
    assert mb.obs.shape == (5, *frame_shape) and mb.obs.dtype == tdt
    b = ring.sample(7)
    assert b.obs.shape == (7, *frame_shape) and b.next_obs.shape == (7, *frame_shape)
    assert b.obs.dtype == tdt
    _assert_matches_ref(b, ref)


def test_out_buffers_are_reused():
    ring, ref = _filled()
    out = ring.make_batch(64)
    ptrs = {n: getattr(out, n).data_ptr() for n in ("obs", "next_obs", "action", "reward", "discount", "index")}
    for _ in range(3):
        got = ring.sample(64, out=out)
        for n, p in ptrs.items():
            assert getattr(got, n).data_ptr() == p, f"sample did not write into out.{n}"
            assert getattr(out, n).data_ptr() == p
        _assert_matches_ref(out, ref)  # the data is in the caller's tensors
    idx = ring.valid_indices()[:64]
    idx = np.resize(idx, 64)
    got = ring.gather(idx, out=out)
    assert got.obs.data_ptr() == ptrs["obs"]
    np.testing.assert_array_equal(out.index.numpy(), idx)
    _assert_matches_ref(out, ref)
    with pytest.raises(ValueError) as ei:
        ring.sample(32, out=out)  # wrong number of rows
    _one_line(ei)


def test_shared_rows_are_views_of_one_window():
    """n_step=1 with stacked frames: obs and next_obs are views of one [B, 5, 84, 84] window."""
    ring, ref = _filled(n_step=1)
    assert ring.can_share
    b = ring.sample(48)
    assert b.frames is not None and b.frames.shape == (48, 5, 84, 84) and b.frames.dtype == torch.uint8
    assert b.obs.shape == b.next_obs.shape == (48, 4, 84, 84)
    assert b.obs.data_ptr() == b.frames.data_ptr()
    assert b.next_obs.data_ptr() == b.frames[:, 1].data_ptr()
    _assert_matches_ref(b, ref)
    sep = ring.gather(b.index.numpy(), out=ring.make_batch(48, shared=False))
    assert sep.frames is None
    _assert_batch_equal(b, sep)
    moved = b.to("cpu")  # a device copy keeps the sharing: one window copied, two views
    assert moved.frames is not None and moved.next_obs.data_ptr() == moved.frames[:, 1].data_ptr()
    _assert_batch_equal(b, moved)


def test_shared_rows_refused_where_they_cannot_hold_both_stacks():
    ring, _ = _filled(n_step=3)
    assert not ring.can_share and ring.make_batch(4).frames is None
    with pytest.raises(ValueError, match="n_step == 1") as ei:
        ring.make_batch(4, shared=True)
    _one_line(ei)
    out = _filled(n_step=1)[0].make_batch(4, shared=True)
    with pytest.raises(ValueError, match="n_step == 1") as ei:  # the core checks too
        ring._ring._sample(out.buffers.frames, out.buffers.next_obs, *out.buffers.meta_args())
    _one_line(ei)
    flat, _ = _filled(stack=1, n_step=1, frame_shape=(4,), dtype=np.float32)
    assert not flat.can_share and flat.make_batch(4).frames is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches():
    ring, ref = _filled()
    out = ring.make_batch(32, pin_memory=True)
    for n in ("obs", "next_obs", "action", "reward", "discount", "index"):
        assert getattr(out, n).is_pinned(), n
    ptr = out.obs.data_ptr()
    ring.sample(32, out=out)
    assert out.obs.data_ptr() == ptr and out.obs.is_pinned()
    _assert_matches_ref(out, ref)
    dev = out.to("cuda")
    torch.cuda.synchronize()
    assert torch.equal(dev.obs.cpu(), out.obs)


# ---------------------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    ring, ref = _filled(seed=5, steps=45)
    ring.sample(10)  # advance the RNG before saving
    path = ring.save(tmp_path / "ring.npz")
    loaded = ReplayRing.load(path)
    for attr in (
        "capacity",
        "num_envs",
        "segment_capacity",
        "stack",
        "n_step",
        "gamma",
        "frame_shape",
        "frame_dtype",
        "obs_shape",
    ):
        assert getattr(loaded, attr) == getattr(ring, attr), attr
    assert len(loaded) == len(ring)
    v = ring.valid_indices()
    np.testing.assert_array_equal(loaded.valid_indices(), v)
    _assert_batch_equal(loaded.gather(v), ring.gather(v))
    np.testing.assert_array_equal(np.asarray(loaded.locate(v)), np.asarray(ring.locate(v)))
    # the same subsequent sample sequence (RNG state saved)
    for _ in range(3):
        _assert_batch_equal(loaded.sample(16), ring.sample(16))
    # and both continue identically after more adds (cursors saved)
    for a in _episode_adds(steps=20, seed=99):
        ring.add(*a)
        loaded.add(*a)
        ref.add(*a)
    v = ref.valid_indices()
    np.testing.assert_array_equal(loaded.valid_indices(), v)
    np.testing.assert_array_equal(ring.valid_indices(), v)
    _assert_matches_ref(loaded.gather(v), ref)
    _assert_batch_equal(loaded.sample(16), ring.sample(16))


def test_save_load_float_vector_frames(tmp_path):
    ring, ref = _filled(stack=1, n_step=2, frame_shape=(4,), dtype=np.float32)
    loaded = ReplayRing.load(ring.save(tmp_path / "vec.npz"))
    assert loaded.frame_dtype == np.float32
    _assert_matches_ref(loaded.gather(ref.valid_indices()), ref)


@pytest.mark.parametrize("frames_device", [None, "cpu"])
def test_a_ring_not_full_saves_only_the_frames_it_holds(tmp_path, frames_device):
    """A ring of 1000 slots per env that holds 12 steps per env (a warm-up, say) writes the frames of
    12 slots per env, and loads back (on the host or a device) with the same contents and draws."""
    kw = dict(stack=4, n_step=3, gamma=0.9, seed=7, num_threads=2)
    ring = ReplayRing(1000 * E, E, (84, 84), np.uint8, frames_device=frames_device, **kw)
    for a in _episode_adds(steps=12, seed=8):
        ring.add(*a)
    path = ring.save(tmp_path / "warm-up.npz")
    with np.load(path) as z:
        assert z["frames"].shape == (E, 12, 84 * 84)
    assert path.stat().st_size < 2 * E * 12 * 84 * 84 + 1000 * E * 16  # frames of 12 slots, metadata of 1000
    drawn, v = ring.sample(16), ring.valid_indices()  # the first draws after the save
    for again in (ReplayRing.load(path), ReplayRing.load(path, frames_device="cpu")):
        assert len(again) == len(ring) and again.segment_capacity == 1000
        np.testing.assert_array_equal(again.valid_indices(), v)
        _assert_batch_equal(again.sample(16), drawn)
        _assert_batch_equal(again.gather(v), ring.gather(v))


def _corrupt_cases(tmp_path):
    ring, _ = _filled(steps=20)
    good = ring.save(tmp_path / "good.npz")
    data = good.read_bytes()
    cases = {}
    p = tmp_path / "truncated.npz"
    p.write_bytes(data[: len(data) // 2])
    cases["truncated"] = p
    p = tmp_path / "tail_cut.npz"
    p.write_bytes(data[:-100])
    cases["tail_cut"] = p
    p = tmp_path / "garbage.npz"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    cases["garbage"] = p
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    cases["empty"] = p
    p = tmp_path / "other.npz"
    np.savez(p, x=np.arange(3))
    cases["other_npz"] = p
    return cases


def test_loading_corrupt_files_raises_clear_error(tmp_path):
    for name, path in _corrupt_cases(tmp_path).items():
        with pytest.raises((ValueError, OSError)) as ei:
            ReplayRing.load(path)
        msg = _one_line(ei)
        assert str(path.name) in msg or "corrupt" in msg.lower() or "replay" in msg.lower(), (name, msg)
    with pytest.raises(FileNotFoundError):
        ReplayRing.load(tmp_path / "does_not_exist.npz")


# ------------------------------------------------------------------- frames on a device
@pytest.mark.parametrize(
    "stack,n_step,frame_shape,dtype",
    [
        (4, 1, (84, 84), np.uint8),  # shared rows
        (4, 3, (84, 84), np.uint8),  # separate rows
        (1, 2, (4,), np.float32),  # vectors
    ],
)
def test_frames_on_a_device_match_the_host_ring(stack, n_step, frame_shape, dtype, tmp_path):
    """frames_device: the same batches as the host ring, from frames kept in a torch tensor.

    Run on "cpu" here (CI has no GPU); on "cuda" the same code keeps the frames in GPU
    memory (``replay.storage=cuda``).
    """
    kw = dict(stack=stack, n_step=n_step, gamma=0.9, seed=3, num_threads=2)
    host = ReplayRing(SEG * E, E, frame_shape, dtype, **kw)
    dev = ReplayRing(SEG * E, E, frame_shape, dtype, frames_device="cpu", **kw)
    assert dev.device_nbytes == dev.capacity * host.frame_bytes and dev.nbytes < host.nbytes
    for a in _episode_adds(steps=60, frame_shape=frame_shape, dtype=dtype, seed=4):  # wraps: SEG < 60
        host.add(*a)
        dev.add(*a)
    out_h, out_d = host.make_batch(64), dev.make_batch(64)
    assert (out_h.frames is None) == (out_d.frames is None)
    for _ in range(3):
        _assert_batch_equal(host.sample(64, out=out_h), dev.sample(64, out=out_d))
    idx = host.valid_indices()
    _assert_batch_equal(host.gather(idx), dev.gather(idx))
    # save on the device ring, load into a host ring and back: the same contents and RNG
    path = dev.save(tmp_path / "dev.npz")
    again_host = ReplayRing.load(path)
    again_dev = ReplayRing.load(path, frames_device="cpu")
    b1, b2, b3 = host.sample(32), again_host.sample(32), again_dev.sample(32)
    _assert_batch_equal(b1, b2)
    _assert_batch_equal(b1, b3)
    with pytest.raises(ValueError, match="make_batch") as ei:  # a host batch cannot receive device frames
        dev.sample(64, out=out_h)
    _one_line(ei)


# ---------------------------------------------------------------------------- add / prefetch
@pytest.mark.parametrize("frames_device", [None, "cpu"])
def test_add_returns_the_slots_the_core_wrote(frames_device):
    ring = ReplayRing(SEG * E, E, (3,), np.float32, stack=1, n_step=1, frames_device=frames_device)
    adds = np.zeros(E, np.int64)
    rng = np.random.default_rng(0)
    for _ in range(2 * SEG + 3):  # wraps twice
        ids = rng.permutation(E)[: rng.integers(1, E + 1)].astype(np.int64)
        frames = rng.standard_normal((len(ids), 3)).astype(np.float32)
        z = np.zeros(len(ids), bool)
        slots = ring.add(ids, frames, np.zeros(len(ids), int), np.zeros(len(ids)), z, z, z)
        np.testing.assert_array_equal(slots, ids * SEG + adds[ids] % SEG)
        env, step = ring.locate(slots)
        np.testing.assert_array_equal(env, ids)
        np.testing.assert_array_equal(step, adds[ids])
        adds[ids] += 1
    assert ring.add([], np.zeros((0, 3), np.float32), [], [], [], [], []).shape == (0,)


@pytest.mark.parametrize("frames_device", [None, "cpu"])
def test_prefetcher_alternates_two_buffers_and_draws_what_sample_draws(frames_device):
    kw = dict(stack=4, n_step=1, gamma=0.9, seed=11, num_threads=2)
    a = ReplayRing(SEG * E, E, (84, 84), frames_device=frames_device, **kw)
    b = ReplayRing(SEG * E, E, (84, 84), **kw)
    for add in _episode_adds(steps=40, seed=2):
        a.add(*add)
        b.add(*add)
    pf = a.prefetcher(16, "cpu")
    ptrs = []
    for _ in range(4):
        got = pf.next()
        _assert_batch_equal(got, b.sample(16))
        assert got.obs.device.type == "cpu"
        ptrs.append(got.frames.data_ptr())
    assert ptrs[0] == ptrs[2] and ptrs[1] == ptrs[3] and ptrs[0] != ptrs[1]  # two buffers, in turn
    assert pf.buffers[0].buffers.copied is None  # nothing to wait for off CUDA


# ------------------------------------------------------------------- the core's raw arrays
@pytest.mark.parametrize("prioritized", [False, True])
def test_raw_storage_views_are_read_only(prioritized):
    """The zero-copy views ``save`` reads alias the ring: a write through one would change
    steps behind the ring's validity index, so every view refuses writes."""
    ring = ReplayRing(SEG * E, E, (84, 84), stack=4, n_step=3, gamma=0.9, seed=0, prioritized=prioritized)
    for a in _episode_adds(steps=40):
        ring.add(*a)
    v = ring.valid_indices()
    before = ring.gather(v)
    views = ring._ring._storage()
    assert set(views) >= {"frames", "actions", "rewards", "flags", "cursors"}
    assert ("priorities" in views) == prioritized
    for name, view in views.items():
        assert not view.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            view[...] = 0
    np.testing.assert_array_equal(ring.valid_indices(), v)
    _assert_batch_equal(ring.gather(v), before)


@pytest.mark.parametrize(
    "name, array, says",
    [
        ("actions", np.zeros((E, SEG), np.int64), "int32"),
        ("rewards", np.zeros((E, SEG + 1), np.float32), f"[{E}, {SEG}]"),
        ("cursors", np.zeros(E + 1, np.int64), f"[{E}]"),
        ("frames", np.zeros((E, SEG, 84), np.uint8), f"[{E}, {SEG}, {84 * 84}]"),
        ("priorities", np.zeros((E, SEG)), "no array priorities"),
        ("weights", np.zeros((E, SEG)), "no array weights"),
    ],
)
def test_restoring_a_raw_array_of_another_shape_or_dtype_is_refused(name, array, says):
    ring, _ = _filled(seed=3)
    v = ring.valid_indices()
    before = ring.gather(v)
    with pytest.raises(ValueError) as ei:
        ring._ring._restore(name, array)
    assert says in _one_line(ei)
    np.testing.assert_array_equal(ring.valid_indices(), v)
    _assert_batch_equal(ring.gather(v), before)


# ------------------------------------------------------------------- the GIL
def _other_thread_runs_during(call, tries: int = 200) -> bool:
    """Whether another Python thread runs while ``call`` is in the core.

    The switch interval is raised so far that a thread holding the GIL never hands it on by
    itself: a call that keeps the GIL lets the other thread run at no point between the two
    reads of its counter, every time. A call that releases it lets the other thread (which
    hands the GIL back at once after each count) in while the core works.
    """
    import threading

    count, done = [0], threading.Event()

    def spin():
        while not done.is_set():
            count[0] += 1
            time.sleep(0)  # releases the GIL

    interval = sys.getswitchinterval()
    thread = threading.Thread(target=spin, daemon=True)
    sys.setswitchinterval(1000.0)
    try:
        thread.start()
        for _ in range(tries):
            before = count[0]
            call()
            if count[0] != before:
                return True
        return False
    finally:
        done.set()
        sys.setswitchinterval(interval)
        thread.join()


@pytest.mark.parametrize("scan", ["valid_indices", "locate", "priorities", "probabilities", "rebuild_index"])
def test_scans_over_the_whole_ring_release_the_gil(scan):
    """A scan of every slot (a million here) lets the other Python threads run meanwhile,
    as sampling and adding do: a training loop's logging thread is not stalled by it."""
    num_envs, seg = 4, 250_000
    ring = ReplayRing(num_envs * seg, num_envs, (1,), stack=1, n_step=1, seed=0, prioritized=True)
    for t in range(64):
        z = np.zeros(num_envs, bool)
        ring.add(
            np.arange(num_envs),
            np.zeros((num_envs, 1), np.uint8),
            np.zeros(num_envs, int),
            np.ones(num_envs),
            z,
            z,
            z | (t == 0),
        )
    written = np.tile(ring.valid_indices(), ring.capacity // len(ring))  # a million, all written
    every = np.arange(ring.capacity, dtype=np.int64)
    calls = {
        "valid_indices": ring.valid_indices,
        "locate": lambda: ring.locate(written),
        "priorities": lambda: ring.priorities(every),
        "probabilities": lambda: ring.probabilities(every),
        "rebuild_index": ring._ring.rebuild_index,
    }
    assert _other_thread_runs_during(calls[scan])
