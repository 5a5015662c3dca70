"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_open", "atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success flushes it to disk and renames it over ``path``.

    For writers that take a file name, not a file object (ffmpeg). If the block raises (or the
    process dies), ``path`` is untouched and the temporary file is removed. The temporary name
    is ``.<name>.tmp<pid>``, plus ``path``'s suffix with ``keep_suffix`` (for writers that
    choose a format by suffix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix if keep_suffix else ''}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # fsync flushes the file's data whichever descriptor wrote it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Opens a temporary file beside ``path``; on success flushes it to disk and renames it over ``path``.

    If the block raises (or the process dies), ``path`` is untouched and the temporary file is removed.
    """
    with atomic_path(path, keep_suffix=False) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
