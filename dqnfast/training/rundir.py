"""One writer per run dir: an OS file lock held for the life of a run, and the checks beside it.

A run (``train``, of any learner; the CLI before Hydra writes anything) takes an
exclusive ``fcntl.flock`` on ``<run dir>/.dqnfast.lock`` before it writes or cleans anything
there, and holds it until it ends. The OS drops the lock when the process dies, SIGKILL
included, so a killed run never blocks its own resume. The file names the holder (pid, host,
start time, command) for the one-line refusal another writer gets. A run that ends removes
it; a file left by a killed process is only a note (nobody holds its lock).

Under the lock: a fresh run refuses a folder that holds a run (a checkpoint or an eval.json);
a resume writes only into its checkpoint's own run dir or into an empty one (a *fork*,
``resume=<old> hydra.run.dir=<new>``). A fork only reads the old folder, and that run must
not be running: its checkpoint and, with ``replay.save``, the replay file of that checkpoint
are hard-linked into the new folder (copied where links fail), and its metrics.csv rows up
to the checkpoint are copied. Neither kind of file is ever changed in place (checkpoints and
rings are replaced atomically, metrics.csv is a copy), so the two runs stay independent.
"""

from __future__ import annotations

import atexit
import csv
import errno
import fcntl
import filecmp
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dqnfast.atomic import atomic_open, is_temp_file
from dqnfast.checkpoint import CHECKPOINT_NAME, NUMBERED_DIR, link_or_copy, numbered_checkpoints, run_dir_of
from dqnfast.config import ConfigError
from dqnfast.folders import deepest_existing, remove_made_dirs
from dqnfast.loggers.base import STEP_KEY

__all__ = [
    "LOCK_NAME",
    "acquire",
    "check_free",
    "check_no_links",
    "check_source_idle",
    "claim",
    "clean_temp_files",
    "fork_into",
    "holder",
    "precheck",
    "release",
    "release_all",
]

log = logging.getLogger("dqnfast.train")

LOCK_NAME = ".dqnfast.lock"


@dataclass
class _Lock:
    path: Path  # the lock file
    fd: int | None  # None: the file system has no locks (a warning said so)
    count: int = 1


_held: dict[Path, _Lock] = {}  # run dir (resolved) -> this process's lock on it (re-entrant)


def _key(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).expanduser().resolve()


def holder(lock_file: Path) -> str:
    """Who the lock file says holds it: ``pid 12 on host h since 2026-01-01 10:00:00 UTC: python -m ...``."""
    try:
        info = json.loads(lock_file.read_text())
        words = f"pid {int(info['pid'])} on host {info.get('host', '?')} since {info.get('started', '?')}"
        cmd = " ".join(str(info.get("command", "")).split())
        return f"{words}: {cmd[:200]}" if cmd else words
    except (OSError, ValueError, KeyError, TypeError):  # being written right now, or not ours
        return "a process that has not written its name yet"


def _describe_self() -> str:
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    argv[0] = Path(argv[0]).name
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": " ".join(argv),
        }
    )


def acquire(run_dir: str | os.PathLike, *, refusal: str) -> None:
    """Locks ``run_dir`` for this process (re-entrant: each call needs one ``release``).

    Creates the folder. Raises ConfigError(``refusal``'s key part) naming the holder when
    another process holds the lock, and in one line when the folder cannot be made or
    written (a path under a regular file, no write permission), leaving no folder it made.
    ``refusal``: ``"key: what to do"`` for the first message. On a file system without
    locks, warns once and goes on unlocked.
    """
    d = _key(run_dir)
    if d in _held:
        _held[d].count += 1
        return
    key = refusal.split(": ", 1)[0]
    made = _make_dirs(d, key)
    path = d / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:  # a folder this user cannot write in
            _remove_dirs(made)
            raise ConfigError(key, _unwritable(d, e)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            key, todo = refusal.split(": ", 1)
            raise ConfigError(key, f"{d} is in use by a running dqnfast process ({holder(path)}); {todo}") from None
        except OSError as e:  # ENOLCK, EOPNOTSUPP: a network or FUSE file system without flock
            os.close(fd)
            log.warning(
                "run dir lock: %s cannot lock files (%s); nothing stops a second process from writing into it",
                d,
                os.strerror(e.errno or errno.ENOLCK),
            )
            _held[d] = _Lock(path, None)
            return
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, _describe_self().encode())
    _held[d] = _Lock(path, fd)


def _unwritable(d: Path, e: OSError) -> str:
    """One line for a run dir that cannot be made or written: which folder, why, what to do."""
    if e.errno == errno.ENOTDIR:  # a path under a regular file: name the file
        f = next((p for p in (d, *d.parents) if p.exists() and not p.is_dir()), None)
        why = f"{f} is a file, not a folder" if f is not None else os.strerror(e.errno)
    else:
        where = Path(e.filename) if e.filename else d
        why = f"{where}: {e.strerror or e}"
    todo = "a folder you can write" if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else "another place"
    return f"cannot create or write the run dir {d} ({why}); choose a run dir in {todo}"


def _make_dirs(d: Path, key: str) -> list[Path]:
    """Creates ``d`` and its missing parents; returns the folders made, outermost first.

    Raises ConfigError(key) in one line when one cannot be made (a path under a regular file,
    a folder without write permission, a name too long), after removing the ones it made.
    """
    missing = [p for p in (d, *d.parents) if not p.exists()][::-1]
    made: list[Path] = []
    for p in missing:
        try:
            p.mkdir()
        except FileExistsError:
            if not p.is_dir():
                _remove_dirs(made)
                raise ConfigError(key, _unwritable(d, OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))) from None
            continue  # another process made it meanwhile
        except OSError as e:
            _remove_dirs(made)
            raise ConfigError(key, _unwritable(d, e)) from None
        made.append(p)
    return made


def _remove_dirs(made: list[Path]) -> None:
    """Removes the folders ``_make_dirs`` made (innermost first) where they are still empty."""
    for p in reversed(made):
        try:
            p.rmdir()
        except OSError:
            break


def release(run_dir: str | os.PathLike) -> None:
    """Undoes one ``acquire``; the last one removes the lock file and drops the lock."""
    d = _key(run_dir)
    lock = _held.get(d)
    if lock is None:
        return
    lock.count -= 1
    if lock.count > 0:
        return
    del _held[d]
    if lock.fd is None:
        return
    try:  # remove the file while still holding the lock, and only if it is still ours
        if os.path.samestat(os.fstat(lock.fd), os.stat(lock.path)):
            lock.path.unlink()
    except OSError:
        pass
    os.close(lock.fd)


def release_all() -> None:
    """Drops every lock this process holds (a refused command, the end of the process)."""
    for d in list(_held):
        _held[d].count = 1
        release(d)


atexit.register(release_all)


def check_source_idle(source_dir: Path) -> None:
    """Refuses a fork of a run that is running: its checkpoint and replay file may change under the fork.

    Reads the old folder only: a shared lock on its lock file, if it has one, tried and dropped.
    """
    path = source_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: nobody holds the folder
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ConfigError(
            "resume",
            f"{source_dir} is in use by a running dqnfast process ({holder(path)}); a fork reads that run's "
            "checkpoint and replay file, so stop it first (SIGTERM writes a checkpoint) or wait for it to end",
        ) from None
    except OSError:
        pass  # no locks on that file system
    finally:
        os.close(fd)


def _holds_run(run_dir: Path) -> str | None:
    """What makes ``run_dir`` a run's folder (its checkpoints, eval.json or metrics.csv), or None.

    A metrics.csv alone is a run stopped before its first checkpoint, or a file of the user's: a
    fresh run would overwrite it, so it is refused as well, unless it is only the header line of
    a run stopped at start-up (nothing of it is lost).
    """
    numbered = numbered_checkpoints(run_dir)
    if numbered:
        return f"checkpoints up to {numbered[-1][0]} agent steps"
    for name in (CHECKPOINT_NAME, "eval.json"):
        if (run_dir / name).is_file():
            return f"a {name}"
    metrics = run_dir / "metrics.csv"
    if metrics.is_file() and not _header_only(metrics):
        return "a metrics.csv"
    return None


def _header_only(metrics: Path) -> bool:
    """Whether ``metrics`` holds dqnfast's header line and no row (a run stopped before its first row)."""
    try:
        with open(metrics, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    lines = head.splitlines()
    return len(lines) <= 1 and (not lines or lines[0].startswith(f"{STEP_KEY},".encode()))


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def check_free(run_dir: Path, source: Path | None, *, key: str = "run_dir") -> None:
    """Refuses to write a run into a folder that holds another run.

    source: the checkpoint file a resume starts from (None: a fresh run). A resume may
    write into the checkpoint's own run dir, into a folder without a run, or into a
    fork's folder that holds nothing yet but the links to this same checkpoint.
    """
    d = _key(run_dir)
    what = _holds_run(d)
    if what is None:
        return
    if source is None and what == "a metrics.csv":
        raise ConfigError(
            key,
            f"{d} holds a metrics.csv and no checkpoint (a run stopped before its first checkpoint, or "
            "another program's file) that a new run would overwrite: move it away, or choose an empty run dir",
        )
    if source is None:
        raise ConfigError(
            key, f"{d} already holds a run ({what}); continue it with resume={d}, or choose an empty run dir"
        )
    if run_dir_of(source) == d or _same_bytes(d / CHECKPOINT_NAME, Path(source)):
        return
    raise ConfigError(
        "resume",
        f"{d} holds another run ({what}); resume a run in its own dir (resume={d}), "
        f"or fork {run_dir_of(source)} into an empty one (resume={run_dir_of(source)} hydra.run.dir=<new dir>)",
    )


def clean_temp_files(run_dir: Path) -> None:
    """Removes the temporary files of writes cut short by a killed run (the real files are intact).

    Only dqnfast's own temporary files (``atomic.temp_path``: its mark and the writer's pid), only
    regular files, only in the run dir and its ``checkpoints/`` folder, never through a link: a
    user's files that merely look temporary stay. Only under the run dir's lock, so none of them is
    a live run's write in progress.
    """
    for d in (run_dir, run_dir / NUMBERED_DIR):
        if d.is_symlink() or not d.is_dir():
            continue
        for p in d.iterdir():
            if is_temp_file(p):
                p.unlink(missing_ok=True)


def check_no_links(run_dir: Path, *, key: str = "run_dir", source: Path | None = None) -> None:
    """Refuses a run dir whose entries (or whose ``checkpoints/`` entries) are symbolic links.

    A run writes only inside its own folder: through a link its metrics, log or checkpoints would
    land in (and its clean-up would reach into) another folder. The run dir itself may be a link,
    and so may the checkpoint a resume starts from (``source``): the run only reads it, then
    replaces the link with its own checkpoint, never writing through it.
    """
    for d in (run_dir, run_dir / NUMBERED_DIR):
        try:
            entries = sorted(d.iterdir()) if d.is_dir() and not d.is_symlink() else []
        except OSError:
            continue
        for p in entries:
            if p.is_symlink() and not (source is not None and os.path.abspath(p) == os.path.abspath(source)):
                raise ConfigError(
                    key,
                    f"{p} is a symbolic link (to {os.readlink(p)}); a run writes only inside its own folder, "
                    "never through links: remove the link, or choose another run dir",
                )


def _copy_rows(src: Path, dst: Path, up_to: int) -> None:
    """metrics.csv rows up to ``up_to`` agent steps, copied atomically (a copy: the fork appends to it)."""
    with open(src, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get(STEP_KEY) and float(r[STEP_KEY]) <= up_to]
        columns = reader.fieldnames or []
    with atomic_open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def fork_into(run_dir: Path, ck: dict, source: Path, *, replay: bool) -> list[Path]:
    """Carries a checkpoint into a fork's folder; returns the files it created there.

    The checkpoint becomes ``checkpoints/step_N.pt`` and ``checkpoint.pt``; with ``replay``
    the ring file it names comes too; metrics.csv keeps the rows up to N. Hard links (the
    old run's files are never changed in place), copies across file systems. Reads the
    old folder only.
    """
    old = run_dir_of(source)
    steps = int(ck["counters"]["env_steps"])
    links = [(source, run_dir / NUMBERED_DIR / f"step_{steps:012d}.pt"), (source, run_dir / CHECKPOINT_NAME)]
    ring = (ck.get("replay") or {}).get("file")
    if replay and ring:
        if not (old / ring).is_file():
            raise ConfigError(
                "resume",
                f"the checkpoint's replay file {old / ring} is gone (a run keeps the ring of its newest "
                "checkpoint only); resume with replay.save=false to refill the ring instead",
            )
        links.append((old / ring, run_dir / ring))
    created: list[Path] = []
    try:
        for src, dst in links:
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(src, dst)
            created.append(dst)
        if (old / "metrics.csv").is_file():
            _copy_rows(old / "metrics.csv", run_dir / "metrics.csv", steps)
            created.append(run_dir / "metrics.csv")
    except OSError as e:
        for p in created:
            p.unlink(missing_ok=True)
        raise ConfigError("resume", f"cannot copy the checkpoint into {run_dir} ({e})") from None
    log.info(
        "resume: forked %s at %d agent steps into %s (checkpoint%s and %s linked or copied; the old run's folder is "
        "not written)",
        old,
        steps,
        run_dir,
        ", replay ring" if len(links) > 2 else "",
        "metrics.csv rows" if (old / "metrics.csv").is_file() else "no metrics.csv",
    )
    return created


def _lock_and_check(d: Path, source: Path | None, dir_key: str) -> None:
    """Locks ``d`` (one ``acquire``) and runs the checks; on refusal releases it and removes the folders it made."""
    fork = source is not None and run_dir_of(source) != d
    existing = deepest_existing(d)
    if source is None or fork:
        refusal = f"{dir_key}: wait for it to end, or choose another run dir"
    else:
        refusal = "resume: a run cannot be resumed while it runs; stop it first (SIGTERM writes a checkpoint)"
    acquire(d, refusal=refusal)
    try:
        if fork:
            check_source_idle(run_dir_of(source))
        check_no_links(d, key=dir_key, source=source)
        check_free(d, source, key=dir_key)
    except ConfigError:
        release(d)
        remove_made_dirs(d, existing)
        raise


def precheck(run_dir: Path, *, source: Path | None) -> None:
    """The CLI's checks before Hydra writes into ``run_dir``: locks it (until the process ends) and checks it.

    Raises ConfigError (one line) as ``claim`` does; a refusal leaves no folder it made.
    """
    _lock_and_check(_key(run_dir), source, "hydra.run.dir")


@contextmanager
def claim(run_dir: Path, *, source: Path | None, ck: dict | None, replay: bool) -> Iterator[None]:
    """Holds ``run_dir`` for a run: the lock, the checks above, stale temporary files removed, a fork's files.

    source: the checkpoint file a resume starts from (None: a fresh run, or a resume from a
    loaded dict of unknown origin, taken as a resume in place). replay: a fork carries the
    ring file. A fork's files are removed again if the run is refused (ConfigError) before
    it has written anything of its own.
    """
    d = _key(run_dir)
    _lock_and_check(d, source, "run_dir")
    try:
        clean_temp_files(d)
        fork = source is not None and run_dir_of(source) != d
        created = fork_into(d, ck, source, replay=replay) if fork else []
        try:
            yield
        except ConfigError:
            for p in created:
                p.unlink(missing_ok=True)
            raise
    finally:
        release(d)
