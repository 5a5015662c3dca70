"""Training checkpoints: atomic, checksummed, refused whole when they do not fit.

A checkpoint is one ``torch.save`` file holding a plain dict of plain types (dicts,
lists, numbers, strings, tensors), so ``torch.load(path, weights_only=True)`` reads it
without running pickled code. Every save is atomic: the bytes go to a temporary file
in the same folder, are flushed to disk, then ``os.replace`` puts them in place; a
reader sees the old file or the new one, never half of one.

Layout of a run dir (``save_run_checkpoint``)::

    checkpoints/step_000000100000.pt   numbered by agent steps; the newest ``keep`` are kept
    checkpoint.pt                      the newest one (a hard link to it: no second copy)

Format (``version`` 2; version 1 files, written before checksums, still load so that old runs
can be evaluated):

    format      "dqnfast-checkpoint"
    version     2
    dqnfast     package version that wrote it
    game        envpool task id ("Pong-v5")
    obs         {"kind": pixels | ram | vector, "shape": [...], "dtype": "uint8"}
    num_actions int
    network     NetworkSpec as a dict (``dqnfast.agent.networks.make_network`` rebuilds the net)
    config      the run's config as a plain dict
    online, target, optimizer   state dicts
    counters    {"env_steps", "frames", "updates", "episodes", "seed", ...}
    ...         anything else the trainer stores (loop state, RNG states, env replay log)
    sha256      checksum of everything above (``payload_digest``)

``load_checkpoint`` raises ``CheckpointError`` (one line) for a missing, truncated,
corrupt or foreign file; ``check_compatible`` raises it when the checkpoint is for
another game, action count, observation type or network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import torch

from dqnfast.agent.networks import head_defaults
from dqnfast.atomic import atomic_open, temp_path
from dqnfast.config.schema import plain

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "check_compatible",
    "find_checkpoint",
    "link_or_copy",
    "load_checkpoint",
    "newest_steps",
    "numbered_checkpoints",
    "payload_digest",
    "prune_checkpoints",
    "run_dir_of",
    "save_run_checkpoint",
    "write_checkpoint",
]

FORMAT = "dqnfast-checkpoint"
VERSION = 2
CHECKPOINT_NAME = "checkpoint.pt"  # the newest checkpoint of a run
NUMBERED_DIR = "checkpoints"
_NUMBERED = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, truncated, corrupt, foreign, or for another task."""


# -------------------------------------------------------------------- checksum
def _feed(h: Any, obj: Any) -> None:
    """Feeds a canonical byte encoding of ``obj`` (plain types and tensors) to hash ``h``."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(b"D" + struct.pack("<q", len(obj)))
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update((b"L" if isinstance(obj, list) else b"U") + struct.pack("<q", len(obj)))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, str):
        b = obj.encode()
        h.update(b"S" + struct.pack("<q", len(b)) + b)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"B" + struct.pack("<q", len(obj)) + bytes(obj))
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    else:
        raise TypeError(f"checkpoint payloads hold plain types and tensors, not {type(obj).__name__}")


def payload_digest(payload: dict) -> str:
    """sha256 (hex) of a checkpoint dict without its ``sha256`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "sha256"})
    return h.hexdigest()


# ------------------------------------------------------------------------ save
def _atomic_save(payload: dict, path: Path) -> None:
    with atomic_open(path) as f:
        torch.save(payload, f)


def package_version() -> str:
    """dqnfast's version (``dqnfast.__version__``, else the installed distribution's)."""
    try:
        from dqnfast import __version__  # inside the try: an editable install may see a namespace package

        return str(__version__)
    except ImportError:
        try:
            from importlib.metadata import version  # only where the package has no __version__

            return version("dqnfast")
        except Exception:
            return "unknown"


def write_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Writes ``payload`` (plain types and tensors) to ``path`` atomically, with format, version and checksum."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, "dqnfast": package_version(), **payload}
    if isinstance(payload.get("config"), dict):  # config choices are Enums; a weights-only load takes plain str
        payload["config"] = plain(payload["config"])
    payload.pop("sha256", None)
    payload["sha256"] = payload_digest(payload)
    _atomic_save(payload, path)
    return path


def link_or_copy(src: Path, dst: Path) -> None:
    """Points ``dst`` at ``src``'s bytes atomically: a hard link, or a copy where links fail."""
    tmp = temp_path(dst)
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def numbered_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(env_steps, path), ...]`` of a run's numbered checkpoints, oldest first."""
    d = Path(run_dir) / NUMBERED_DIR
    found = []
    if d.is_dir():
        for p in d.iterdir():
            m = _NUMBERED.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def newest_steps(run_dir: str | os.PathLike) -> int | None:
    """Agent steps of a run's ``checkpoint.pt``: those of the numbered checkpoint it links to (None: not found)."""
    latest = Path(run_dir) / CHECKPOINT_NAME
    for steps, p in reversed(numbered_checkpoints(run_dir)):
        try:
            if os.path.samefile(p, latest):
                return steps
        except OSError:
            continue
    return None


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` numbered checkpoints; returns the deleted paths."""
    found = numbered_checkpoints(run_dir)
    gone = [p for _, p in found[: max(0, len(found) - max(1, int(keep)))]]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def save_run_checkpoint(run_dir: str | os.PathLike, payload: dict, *, env_steps: int, keep: int) -> Path:
    """Saves ``checkpoints/step_{env_steps:012d}.pt``, points ``checkpoint.pt`` at it, keeps the newest ``keep``.

    Returns the path of ``checkpoint.pt``.
    """
    run_dir = Path(run_dir)
    numbered = write_checkpoint(run_dir / NUMBERED_DIR / f"step_{int(env_steps):012d}.pt", payload)
    latest = run_dir / CHECKPOINT_NAME
    link_or_copy(numbered, latest)
    prune_checkpoints(run_dir, keep)
    return latest


# ------------------------------------------------------------------------ load
def find_checkpoint(where: str | os.PathLike) -> Path:
    """A run dir -> its ``checkpoint.pt``; a file -> itself. Raises CheckpointError (one line)."""
    p = Path(where).expanduser()
    if p.is_dir():
        if (p / CHECKPOINT_NAME).is_file():
            return p / CHECKPOINT_NAME
        numbered = numbered_checkpoints(p)
        if numbered:
            return numbered[-1][1]
        raise CheckpointError(f"no {CHECKPOINT_NAME} in {p} (the run has not written a checkpoint yet?)")
    if p.is_file():
        return p
    raise CheckpointError(f"no run dir or checkpoint file at {p}")


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run dir a checkpoint file belongs to (``run/checkpoint.pt`` or ``run/checkpoints/step_N.pt``).

    The folder that holds the path as given, resolved; a checkpoint file that is a symlink is
    not followed: ``B/checkpoint.pt -> A/checkpoint.pt`` belongs to B, so a resume of B writes
    into B (replacing the link) and never into A.
    """
    p = Path(checkpoint).expanduser().absolute()
    if p.is_dir():
        return p.resolve()
    if p.parent.name == NUMBERED_DIR and _NUMBERED.match(p.name):
        return p.parent.parent.resolve()
    return p.parent.resolve()


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of an exception (torch's zip errors go on for lines)."""
    text = str(e).strip()
    text = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(e).__name__}: {text}".rstrip(": ")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Reads and verifies a checkpoint written by ``write_checkpoint``.

    Loads with ``weights_only=True`` (no pickled code runs). Raises CheckpointError
    (a ValueError, one line) when the file is missing, truncated or corrupt, not a
    dqnfast checkpoint, or its checksum does not match its contents.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (truncated)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, disallowed type, ...
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dqnfast checkpoint")
    if ckpt.get("version", 1) > VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt['version']}; this dqnfast reads "
            f"up to {VERSION} (upgrade dqnfast)"
        )
    digest = ckpt.get("sha256")
    if digest is not None:
        try:
            actual = payload_digest(ckpt)
        except TypeError as e:
            raise CheckpointError(f"checkpoint {path} is corrupt ({e})") from None
        if actual != digest:
            raise CheckpointError(
                f"checkpoint {path} is corrupt (checksum mismatch: its contents changed after it was written)"
            )
    elif ckpt.get("version", 1) >= 2:
        raise CheckpointError(f"checkpoint {path} is corrupt (no checksum)")
    return ckpt


# --------------------------------------------------------------- compatibility
# A checkpoint written before the head's keys existed holds a plain Q head: filled in with
# NetworkSpec's defaults (``head_defaults``), it compares equal to a run asking for that head.


def _net_words(spec: dict) -> str:
    hidden = spec.get("hidden")
    head = ""
    if spec.get("atoms"):
        head += f" C51 {spec['atoms']} atoms on [{spec.get('v_min'):g}, {spec.get('v_max'):g}]"
    if spec.get("noisy"):
        head += f" noisy (sigma0 {spec.get('noisy_sigma0'):g})"
    return (
        f"{spec.get('kind')}{' dueling' if spec.get('dueling') else ''}{head} hidden {list(hidden or [])} "
        f"on {spec.get('obs_dtype')}{list(spec.get('obs_shape') or [])}"
    )


def check_compatible(
    ckpt: dict, *, game: str, obs_kind: str | None, num_actions: int, network: dict, what: str = "this run"
) -> None:
    """Refuses a checkpoint for another game, observation type, action count or network.

    Raises CheckpointError with one line naming the first mismatch, e.g.
    ``checkpoint is for Breakout-v5, this run is Pong-v5``.
    """
    if ckpt.get("game") != game:
        raise CheckpointError(f"checkpoint is for {ckpt.get('game')}, {what} is {game}")
    ck_obs = (ckpt.get("obs") or {}).get("kind")
    if ck_obs is not None and obs_kind is not None and ck_obs != obs_kind:
        raise CheckpointError(f"checkpoint observations are {ck_obs}, {what}'s are {obs_kind}")
    ck_net = {**head_defaults(), **(ckpt.get("network") or {})}
    ck_actions = ckpt.get("num_actions", ck_net.get("num_actions"))
    if ck_actions != num_actions:
        raise CheckpointError(f"checkpoint has {ck_actions} actions, {what} has {num_actions}")
    mine = {**head_defaults(), **network}
    for d in (ck_net, mine):
        d["obs_shape"] = [int(x) for x in d.get("obs_shape") or []]
        d["hidden"] = [int(x) for x in d.get("hidden") or []]
    if ck_net != mine:
        raise CheckpointError(f"checkpoint network is {_net_words(ck_net)}, {what}'s is {_net_words(mine)}")
