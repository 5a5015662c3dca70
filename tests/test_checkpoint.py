"""dqnfast.checkpoint: atomic numbered checkpoints, checksums, refusal of bad or foreign files."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import pytest
import torch

from dqnfast.agent.networks import NetworkSpec, make_network
from dqnfast.atomic import TEMP_MARK
from dqnfast.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    check_compatible,
    find_checkpoint,
    load_checkpoint,
    numbered_checkpoints,
    payload_digest,
    run_dir_of,
    save_run_checkpoint,
    write_checkpoint,
)

SPEC = NetworkSpec("mlp", [4], "float32", 2, hidden=[8, 8])


def payload(step: int = 10) -> dict:
    torch.manual_seed(step)
    online, target = make_network(SPEC), make_network(SPEC)
    opt = torch.optim.Adam(online.parameters())
    online(torch.randn(3, 4)).sum().backward()
    opt.step()
    return {
        "online": online.state_dict(),
        "target": target.state_dict(),
        "optimizer": opt.state_dict(),
        "counters": {"env_steps": step, "updates": step // 4},
        "config": {"game": "CartPole"},
        "game": "CartPole-v1",
        "obs": {"kind": "vector", "shape": [4], "dtype": "float32"},
        "num_actions": 2,
        "network": SPEC.to_dict(),
        "rng": {"python": (3, tuple(range(5)), None), "big": 2**70},
        "loop": {"scores": [1.0, 2.5], "loss_sum": torch.tensor(0.25), "none": None},
    }


def flip_tensor_byte(src, dst, record: str = "data/0", at: int = 3) -> None:
    """Copies a torch zip checkpoint, flipping one byte inside a tensor record (the zip stays valid)."""
    data = bytearray(open(src, "rb").read())
    info = next(i for i in zipfile.ZipFile(src).infolist() if i.filename.endswith(record))
    h = info.header_offset
    name_len, extra_len = struct.unpack("<HH", data[h + 26 : h + 30])
    data[h + 30 + name_len + extra_len + at] ^= 0xFF
    open(dst, "wb").write(bytes(data))


def test_round_trip_numbered_link_and_keep_k(tmp_path):
    for step in (100, 200, 300, 400):
        latest = save_run_checkpoint(tmp_path, payload(step), env_steps=step, keep=2)
    assert latest == tmp_path / CHECKPOINT_NAME
    assert [s for s, _ in numbered_checkpoints(tmp_path)] == [300, 400]  # the newest K
    newest = tmp_path / "checkpoints" / "step_000000000400.pt"
    assert os.path.samefile(latest, newest)  # checkpoint.pt is the newest one, not a copy
    ck = load_checkpoint(latest)
    p = payload(400)
    assert ck["counters"] == p["counters"] and ck["rng"] == p["rng"] and ck["loop"]["scores"] == [1.0, 2.5]
    assert ck["format"] == "dqnfast-checkpoint" and ck["version"] == 2 and ck["dqnfast"]
    assert ck["sha256"] == payload_digest(ck)
    for k, v in p["online"].items():
        assert torch.equal(ck["online"][k], v)
    assert not [f for f in tmp_path.rglob("*") if TEMP_MARK in f.name]  # no temporary file left behind
    assert find_checkpoint(tmp_path) == latest and find_checkpoint(newest) == newest
    assert run_dir_of(newest) == tmp_path.resolve() and run_dir_of(latest) == tmp_path.resolve()


def test_version_1_files_without_a_checksum_still_load(tmp_path):
    online = make_network(SPEC)
    old = {"format": "dqnfast-checkpoint", "version": 1, "online": online.state_dict(), "game": "CartPole-v1"}
    torch.save(old, tmp_path / "v1.pt")  # format version 1: no checksum
    assert load_checkpoint(tmp_path / "v1.pt")["version"] == 1


def test_flipped_byte_is_caught_by_the_checksum(tmp_path):
    good = write_checkpoint(tmp_path / "good.pt", payload())
    flip_tensor_byte(good, tmp_path / "bad.pt")
    ck = torch.load(tmp_path / "bad.pt", weights_only=True)  # torch itself does not notice
    assert ck["sha256"] != payload_digest(ck)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("cut", [0, 10, 0.5, -30])
def test_truncated_files_are_refused(tmp_path, cut):
    data = open(write_checkpoint(tmp_path / "good.pt", payload()), "rb").read()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    (tmp_path / "cut.pt").write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated|empty") as e:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(e.value)


def test_foreign_files_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a dqnfast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    buf = io.BytesIO()
    torch.save({"format": "dqnfast-checkpoint", "version": 2, "x": zipfile.ZipInfo("x")}, buf)  # pickled code
    (tmp_path / "code.pt").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="truncated or corrupt"):  # weights_only: never unpickles classes
        load_checkpoint(tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no checkpoint.pt in"):
        find_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no run dir or checkpoint"):
        find_checkpoint(tmp_path / "nope")


def test_a_checkpoint_from_before_the_head_keys_is_a_plain_head():
    """Checkpoints written before the distributional and noisy heads existed lack those keys: they hold a
    plain Q head and resume into a run that asks for one (and are refused by one that asks for C51)."""
    ck = payload()
    old = {k: v for k, v in SPEC.to_dict().items() if k not in ("atoms", "v_min", "v_max", "noisy", "noisy_sigma0")}
    ck["network"] = old
    mine = dict(game="CartPole-v1", obs_kind="vector", num_actions=2, network=SPEC.to_dict())
    check_compatible(ck, **mine)
    c51 = NetworkSpec("mlp", [4], "float32", 2, hidden=list(SPEC.hidden), atoms=51).to_dict()
    with pytest.raises(CheckpointError, match="C51 51 atoms"):
        check_compatible(ck, **{**mine, "network": c51})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(game="Pong-v5"), "checkpoint is for CartPole-v1, this run is Pong-v5"),
        (dict(obs_kind="pixels"), "checkpoint observations are vector, this run's are pixels"),
        (dict(num_actions=3), "checkpoint has 2 actions, this run has 3"),
        (
            dict(network=NetworkSpec("mlp", [4], "float32", 2, dueling=True, hidden=[8, 8]).to_dict()),
            "checkpoint network is mlp hidden [8, 8] on float32[4], this run's is mlp dueling hidden [8, 8]",
        ),
        (dict(network=NetworkSpec("mlp", [4], "float32", 2, hidden=[16]).to_dict()), "hidden [16]"),
        (
            dict(network=NetworkSpec("mlp", [4], "float32", 2, hidden=[8, 8], atoms=51).to_dict()),
            "checkpoint network is mlp hidden [8, 8] on float32[4], this run's is mlp C51 51 atoms on [-10, 10] hidden",
        ),
        (
            dict(network=NetworkSpec("mlp", [4], "float32", 2, hidden=[8, 8], noisy=True).to_dict()),
            "this run's is mlp noisy (sigma0 0.5) hidden [8, 8]",
        ),
    ],
)
def test_mismatches_name_what_differs(kwargs, message):
    ck = payload()
    mine = dict(game="CartPole-v1", obs_kind="vector", num_actions=2, network=SPEC.to_dict())
    check_compatible(ck, **mine)  # the same task passes
    with pytest.raises(CheckpointError) as e:
        check_compatible(ck, **{**mine, **kwargs})
    assert message in str(e.value) and "\n" not in str(e.value)
