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
        proc = _run_python(_THREADS_REFUSED, timeout=60)
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
