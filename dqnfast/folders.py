"""The folders a command made, told apart from the ones it found: so a refusal removes only its own.

A command notes ``deepest_existing(path)`` before it creates anything on ``path``; on refusal
``remove_made_dirs`` takes away the empty folders below that one and nothing at or above it, so a
folder the user made (empty or not) is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["deepest_existing", "remove_made_dirs"]


def deepest_existing(path: Path) -> Path:
    """``path`` or the nearest of its parents that exists now (what a command found before it wrote anything)."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def remove_made_dirs(path: Path, existing: Path) -> None:
    """Removes ``path`` and its parents below ``existing``, each only while empty: the folders a command made.

    existing: ``deepest_existing`` of ``path`` before the command made anything. Nothing at or above it
    is touched, so a folder the user made stays, empty or not.
    """
    d = Path(os.path.abspath(path))
    existing = Path(os.path.abspath(existing))
    while d != existing and existing in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
