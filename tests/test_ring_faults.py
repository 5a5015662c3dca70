"""Faults around the replay ring: the OS refusing threads, and altered replay files.

Every refusal is one line of the promised type; nothing hangs (subprocess tests carry a
timeout, so a hang fails the test instead of stalling CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI_ENV

from dqnfast.replay import ReplayFileError, ReplayRing

REPO = Path(__file__).resolve().parents[1]
SEG = 16
E = 3


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg.strip(), f"message is not one line: {msg!r}"
    return msg


def _run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ threads
_THREADS_REFUSED = r"""
import resource
from dqnfast.replay import ReplayRing

def vm_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

# a little room above the current size: enough for the ring, not for 1000 thread stacks
limit = vm_bytes() + 256 * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    ReplayRing(48, 4, (84, 84), num_threads=1000, check_memory=False)
except Exception as e:
    print("RAISED", type(e).__name__, repr(str(e)))
else:
    print("NO ERROR")
# the pool is gone: with the limit lifted, a ring with threads works again
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
ring = ReplayRing(48, 4, (84, 84), num_threads=4, check_memory=False)
print("AFTER", ring.capacity)
"""


def test_threads_refused_by_the_os_raise_one_line_instead_of_hanging():
    """The pool stops and joins the workers it started before rethrowing: no hang in cond destroy."""
    try:
        proc = _run_python(_THREADS_REFUSED, timeout=120)  # a hang fails here; slow imports on a busy machine do not
    except subprocess.TimeoutExpired:
        pytest.fail("ReplayRing(num_threads=1000) under an address-space cap hung instead of raising")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next((ln for ln in out.splitlines() if ln.startswith(("RAISED", "NO ERROR"))), "")
    if line == "NO ERROR":
        pytest.skip("this machine started 1000 threads under the cap; nothing to refuse")
    assert line.startswith("RAISED RuntimeError"), out
    assert "thread" in line and "\\n" not in line, line
    assert "AFTER 48" in out, out


# ------------------------------------------------------------- replay files
def _filled_ring(num_actions=6) -> ReplayRing:
    ring = ReplayRing(
        SEG * E, E, (84, 84), stack=4, n_step=3, gamma=0.9, seed=1, num_threads=2, num_actions=num_actions
    )
    rng = np.random.default_rng(0)
    for step in range(10):  # fewer steps than a segment holds: some slots never written
        ids = rng.permutation(E).astype(np.int64)
        ring.add(
            ids,
            rng.integers(0, 256, (E, 84, 84), dtype=np.uint8),
            rng.integers(0, 6, E),
            rng.integers(-1, 2, E).astype(np.float32),
            np.zeros(E, bool),
            np.zeros(E, bool),
            np.full(E, step == 0),
        )
    return ring


def _rewrite(
    src: Path,
    dst: Path,
    meta: dict | None = None,
    arrays: dict | None = None,
    fix_checksum: bool = True,
    drop: tuple = (),
) -> Path:
    """Writes a copy of a replay file with changed meta/arrays and fresh zip CRCs.

    fix_checksum: recompute the file's own sha256 as ``save`` does (a consistent forgery), else keep the
    old one (a change the zip CRCs alone would let through).
    """
    from dqnfast.replay.files import ARRAY_NAMES as _ARRAY_NAMES
    from dqnfast.replay.files import digest as _digest
    from dqnfast.replay.files import feed as _feed

    with np.load(src, allow_pickle=False) as z:
        entries = {name: z[name] for name in z.files}
    m = json.loads(str(entries["meta"]))
    m.update(meta or {})
    entries["meta"] = np.array(json.dumps(m))
    for name, fn in (arrays or {}).items():
        entries[name] = fn(entries[name].copy())
    if fix_checksum:
        h = _digest(str(entries["meta"]))
        for name in (*_ARRAY_NAMES, *(["priorities"] if "priorities" in entries else [])):
            _feed(h, name, entries[name])
        entries["sha256"] = np.array(h.hexdigest())
    for name in drop:
        entries.pop(name)
    sha = entries.pop("sha256", None)
    with open(dst, "wb") as f:  # the checksum entry last, as save writes it
        np.savez(f, **entries, **({} if sha is None else {"sha256": sha}))
    return dst


def _set(index, value):
    def fn(a):
        a[index] = value
        return a

    return fn


ALTERED = {
    "NaN reward": dict(arrays={"rewards": _set((0, 2), np.nan)}),
    "infinite reward": dict(arrays={"rewards": _set((1, 3), -np.inf)}),
    "flags 0xFF": dict(arrays={"flags": _set((0, 1), 0xFF)}),
    "cursor 2^62": dict(arrays={"cursors": _set(1, 2**62)}),
    "negative cursor": dict(arrays={"cursors": _set(2, -5)}),
    "action beyond num_actions": dict(arrays={"actions": _set((2, 4), 99)}),
    "negative action": dict(arrays={"actions": _set((0, 4), -1)}),
    "data beyond the cursor": dict(arrays={"flags": _set((0, SEG - 1), 1)}),
    "rng_state 2^64": dict(meta={"rng_state": 2**64}),
    "rng_state -1": dict(meta={"rng_state": -1}),
    "rng_state float": dict(meta={"rng_state": 1.5}),
    "seed -1": dict(meta={"seed": -1}),
    "capacity not a multiple": dict(meta={"capacity": SEG * E + 1}),
    "frame dtype garbage": dict(meta={"frame_dtype": "no such dtype"}),
    "frame byte changed, zip CRC valid": dict(arrays={"frames": _set((1, 2, 10), 7)}, fix_checksum=False),
    "reward changed, zip CRC valid": dict(arrays={"rewards": _set((0, 2), 0.5)}, fix_checksum=False),
    "meta changed, zip CRC valid": dict(meta={"gamma": 0.5}, fix_checksum=False),
    "checksum missing": dict(drop=("sha256",)),
    "frames of written slots left out": dict(arrays={"frames": lambda a: a[:, :2].copy()}),
}


@pytest.mark.parametrize("case", list(ALTERED), ids=list(ALTERED))
def test_altered_replay_files_are_refused_in_one_line(case, tmp_path):
    ring = _filled_ring()
    good = ring.save(tmp_path / "ring.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", **ALTERED[case])
    with pytest.raises(ReplayFileError) as ei:
        ReplayRing.load(bad)
    msg = _one_line(ei)
    assert "bad.npz" in msg, msg
    assert ReplayRing.load(good).num_valid() == ring.num_valid()  # the original still loads


def _prioritized_ring() -> ReplayRing:
    """Two envs of CartPole-sized frames, some priorities reported: max_priority is 10 + eps, above every slot's."""
    ring = ReplayRing(SEG * 2, 2, (4,), "float32", stack=1, n_step=1, gamma=0.9, seed=1, prioritized=True)
    ids = np.arange(2, dtype=np.int64)
    for step in range(12):
        ring.add(
            ids,
            np.ones((2, 4), np.float32),
            np.zeros(2, np.int64),
            np.ones(2, np.float32),
            np.zeros(2, bool),
            np.zeros(2, bool),
            np.full(2, step == 0),
        )
    valid = ring.valid_indices()[:4]
    ring.update_priorities(valid, np.array([10.0, 0.5, 2.0, 3.0], np.float32), ring.locate(valid)[1])
    return ring


def _written_to(value):
    def fn(a):
        a[a > 0] = value
        return a

    return fn


ALTERED_PRIORITIES = {
    # every draw would be that one slot, though the file says no priority passed 10
    "a priority above max_priority": lambda m: dict(arrays={"priorities": _set((0, 3), 1e308)}),
    # all slots at 1e308 with max_priority 1e308: the sum over the ring overflows, weights are NaN
    "priorities no TD error gives": lambda m: dict(
        meta={"sampler": {**m["sampler"], "max_priority": 1e308}}, arrays={"priorities": _written_to(1e308)}
    ),
}


@pytest.mark.parametrize("case", list(ALTERED_PRIORITIES), ids=list(ALTERED_PRIORITIES))
def test_altered_priorities_are_refused_in_one_line(case, tmp_path):
    """Consistent forgeries (checksum recomputed): each is refused for what it holds, before any draw."""
    ring = _prioritized_ring()
    good = ring.save(tmp_path / "ring.npz")
    with np.load(good) as z:
        meta = json.loads(str(z["meta"]))
    bad = _rewrite(good, tmp_path / "bad.npz", **ALTERED_PRIORITIES[case](meta))
    with pytest.raises(ReplayFileError) as ei:
        ReplayRing.load(bad, alpha=1.0)
    msg = _one_line(ei)
    assert "bad.npz" in msg and "max_priority" in msg, msg
    again = ReplayRing.load(good, alpha=1.0)  # the original still loads, and draws as it did
    assert again.max_priority == ring.max_priority and torch.isfinite(again.sample(8).weight).all()


def test_a_consistent_rewrite_with_no_change_still_loads(tmp_path):
    """The forgery helper itself is faithful: the refusals above are about the changed values."""
    ring = _filled_ring()
    good = ring.save(tmp_path / "ring.npz")
    copy = ReplayRing.load(_rewrite(good, tmp_path / "copy.npz"))
    np.testing.assert_array_equal(copy.valid_indices(), ring.valid_indices())
    assert copy.rng_state == ring.rng_state and copy.num_actions == 6
    prioritized = _prioritized_ring()
    good = prioritized.save(tmp_path / "per.npz")
    copy = ReplayRing.load(_rewrite(good, tmp_path / "per_copy.npz"))
    slots = np.arange(prioritized.capacity)
    np.testing.assert_array_equal(copy.priorities(slots), prioritized.priorities(slots))


def test_load_checks_actions_against_the_callers_action_count(tmp_path):
    ring = _filled_ring(num_actions=None)  # the file does not know the action count
    path = ring.save(tmp_path / "ring.npz")
    assert ReplayRing.load(path, num_actions=6).num_actions == 6
    with pytest.raises(ReplayFileError) as ei:
        ReplayRing.load(path, num_actions=2)  # the file holds actions up to 5
    assert "action" in _one_line(ei)


def test_checksum_is_the_last_entry_written(tmp_path):
    path = _filled_ring().save(tmp_path / "ring.npz")
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist()]
    assert names[-1] == "sha256.npy", names


def test_a_file_from_before_checksums_loads_when_its_contents_are_sound(tmp_path):
    """Version 1 files (no checksum) written by earlier runs still resume; their contents are still checked."""
    ring = _filled_ring(num_actions=None)
    good = ring.save(tmp_path / "ring.npz")
    old = _rewrite(good, tmp_path / "v1.npz", meta={"version": 1}, drop=("sha256",))
    np.testing.assert_array_equal(ReplayRing.load(old).valid_indices(), ring.valid_indices())
    nan = _rewrite(old, tmp_path / "v1nan.npz", arrays={"rewards": _set((0, 2), np.nan)}, fix_checksum=False)
    with pytest.raises(ReplayFileError):
        ReplayRing.load(nan)


def test_bit_flip_with_recomputed_zip_crc_is_refused(tmp_path):
    """A byte changed inside the stored frames, with the zip entry's CRC patched to match."""
    path = _filled_ring().save(tmp_path / "ring.npz")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("frames.npy")
        raw = zf.read("frames.npy")
    assert info.compress_type == zipfile.ZIP_STORED
    h = info.header_offset  # the local header's own name and extra lengths (its extra can differ)
    start = h + 30 + int.from_bytes(data[h + 26 : h + 28], "little") + int.from_bytes(data[h + 28 : h + 30], "little")
    assert bytes(data[start : start + len(raw)]) == raw
    pos = start + len(raw) - 1000  # inside the frame bytes, past the .npy header
    data[pos] ^= 0x10
    new_crc = zlib.crc32(bytes(data[start : start + len(raw)])) & 0xFFFFFFFF
    old_crc = info.CRC.to_bytes(4, "little")
    assert data.count(old_crc) >= 2  # the local header and the central directory
    data = data.replace(old_crc, new_crc.to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # the zip layer sees nothing wrong
    with pytest.raises(ReplayFileError) as ei:
        ReplayRing.load(path)
    assert "checksum" in _one_line(ei)


# ------------------------------------------------------------------ training
TINY_CARTPOLE = [
    "preset=cartpole",
    "algo.learning_starts=100",
    "algo.total_steps=200",
    "logger.log_every=100",
    "logger.progress=false",
    "envs.eval.episodes=1",
    "envs.eval.num_envs=1",
    "envs.eval.max_episode_steps=50",
]


def test_training_rounds_a_capacity_to_whole_env_segments(train_in_process, tmp_path):
    out = tmp_path / "run"
    code, err = train_in_process(
        *TINY_CARTPOLE, "envs.num_envs=3", "replay.capacity=1000", f"hydra.run.dir={out}", cwd=tmp_path
    )
    assert code == 0, err[-3000:]
    log = err + "".join(p.read_text() for p in out.rglob("*.log"))
    assert "the ring holds 999 (333 steps per env)" in log, log[-3000:]


def _refused_resume(cwd: Path, *args: str) -> str:
    """Runs ``python -m dqnfast.train *args`` in a process of its own; asserts a one-line refusal (exit 2), returns it."""
    r = subprocess.run(
        [sys.executable, "-m", "dqnfast.train", *args],
        cwd=cwd,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, r.stderr[-3000:]
    return err[0]


@pytest.mark.parametrize(
    "case",
    [
        "NaN reward",
        pytest.param("action beyond num_actions", marks=pytest.mark.slow),
        pytest.param("frame byte changed, zip CRC valid", marks=pytest.mark.slow),
    ],
)
def test_resume_from_an_altered_replay_file_is_refused_in_one_line(train_in_process, tmp_path, case):
    # the run that writes the file through the CLI's entry point in this process; the resume
    # that must refuse it in a process of its own
    out = tmp_path / "run"
    code, err = train_in_process(*TINY_CARTPOLE, "replay.save=true", f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    files = sorted(out.glob("replay_*.npz"))
    assert files, sorted(p.name for p in out.iterdir())
    change = dict(ALTERED[case])
    if case == "action beyond num_actions":  # CartPole has 2 actions: 2 is out of range for this game
        change = dict(arrays={"actions": _set((0, 4), 2)})
    _rewrite(files[-1], files[-1], **change)
    err = _refused_resume(tmp_path, f"resume={out}", *TINY_CARTPOLE[1:], "algo.total_steps=300", "replay.save=true")
    assert files[-1].name in err and "replay.save=false" in err, err


def test_resume_with_a_saved_ring_refuses_a_changed_capacity(train_in_process, tmp_path):
    """The checkpoint's config must describe the ring the run uses: a capacity logged as changed while the
    saved ring keeps its own size would be recorded in every later checkpoint as the wrong one.

    The run through the CLI's entry point in this process, the refused resume in a process of its own."""
    out = tmp_path / "run"
    code, err = train_in_process(*TINY_CARTPOLE, "replay.save=true", f"hydra.run.dir={out}", cwd=tmp_path)
    assert code == 0, err[-3000:]
    before = (out / "checkpoint.pt").read_bytes()
    err = _refused_resume(tmp_path, f"resume={out}", "algo.total_steps=300", "replay.capacity=100")
    assert err.startswith("error: replay.capacity: the saved replay ring"), err
    assert "replay.capacity=50000" in err and "replay.save=false" in err, err
    assert (out / "checkpoint.pt").read_bytes() == before
