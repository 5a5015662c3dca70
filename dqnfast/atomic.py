"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["TEMP_MARK", "DiskFullError", "atomic_open", "atomic_path", "is_temp_file", "temp_path"]

_FULL = (errno.ENOSPC, errno.EDQUOT)

# A write in progress is ``.<name>.dqnfast-tmp<pid>[<suffix>]`` beside its file: the mark and the
# writer's pid make it recognisably dqnfast's own, so the clean-up after a killed run removes
# nothing a user (or another program) keeps in the folder under a look-alike name.
TEMP_MARK = ".dqnfast-tmp"
_TEMP_NAME = re.compile(r"^\..+" + re.escape(TEMP_MARK) + r"(\d+)(\.[A-Za-z0-9]+)?$")


def temp_path(path: str | os.PathLike, *, keep_suffix: bool = False, pid: int | None = None) -> Path:
    """The temporary file of a write to ``path`` by process ``pid`` (this one by default).

    keep_suffix: end with ``path``'s suffix too, for writers that choose a format by it.
    """
    path = Path(path)
    pid = os.getpid() if pid is None else int(pid)
    return path.with_name(f".{path.name}{TEMP_MARK}{pid}{path.suffix if keep_suffix else ''}")


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (not a link, not a folder) named as dqnfast's temporary files are."""
    if not _TEMP_NAME.match(path.name):
        return False
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False


class DiskFullError(OSError):
    """A write ran out of disk space or quota. ``str()`` is one line; ``filename`` the file, ``free`` bytes left."""

    def __init__(self, err: int, message: str, filename: str, free: int) -> None:
        super().__init__(err, message, filename)
        self.message, self.free = message, int(free)

    def __str__(self) -> str:
        return self.message


def _free_bytes(d: Path) -> int:
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return 0


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what it was raised from: torch wraps its writer's errors) is ENOSPC/EDQUOT."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in _FULL:
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success flushes it to disk and renames it over ``path``.

    For writers that take a file name, not a file object (ffmpeg). If the block raises (or the
    process dies), ``path`` is untouched and the temporary file is removed. The temporary name
    is ``temp_path(path)``, plus ``path``'s suffix with ``keep_suffix`` (for writers that
    choose a format by suffix). A full disk (or quota) raises ``DiskFullError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, keep_suffix=keep_suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # fsync flushes the file's data whichever descriptor wrote it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not _disk_full(e):
            raise
        tmp.unlink(missing_ok=True)  # before measuring: its bytes are given back
        free = _free_bytes(path.parent)
        raise DiskFullError(
            errno.ENOSPC, f"no space left on device writing {path} ({free / 1e6:.1f} MB free)", str(path), free
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success flushes it to disk and renames it over ``path``.

    If the block raises (or the process dies), ``path`` is untouched and the temporary file is removed.
    A full disk (or quota) raises ``DiskFullError`` naming ``path``.
    """
    with atomic_path(path, keep_suffix=False) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
