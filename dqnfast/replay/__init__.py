"""The Python face of the C++ replay ring (``dqnfast._core``).

The ring stores every observation frame once, in one circular segment per env,
and rebuilds frame stacks and n-step returns by index at sample time, in C++
threads with the GIL released. The exact rules (what a slot holds, which
indices are valid, how stacks and returns are rebuilt) are written as
invariants at the top of ``csrc/replay_ring.h``; in short:

* Call ``add`` once per envpool result with the *newest* frame of the returned
  observation (``obs[:, -1]`` for Atari pixels, ``info["ram"]`` for RAM, the
  vector itself for classic control), the action that was sent, the reward,
  ``terminated``, ``truncated`` and ``first = info["elapsed_step"] == 0``.
  The observation from ``reset()`` is added with ``first=True``.
* A transition at step ``t`` is ``(stack(t), action(t+1), n-step return,
  stack(t+m), discount)``. Bootstrapping is cut (``discount = 0``) at every
  ``terminated`` (life losses with ``episodic_life`` included); truncation
  bootstraps through the real final observation (stored in its own slot; the
  reset step after it is a separate slot and never a transition). The stack is
  cut only where a new episode starts (the first frame repeats, as envpool's
  reset stack does), never at a life loss.

The package does no index math; its rooms:

    ring      ReplayRing: checks with one-line messages, the memory budget, add/sample/gather
    storage   where the frames live: HostFrames (the C++ ring) or DeviceFrames (a GPU tensor)
    batch     Batch (what the learner reads) and BatchBuffers (what the core writes, its events)
    prefetch  Prefetcher: two batches in turn, sampling overlapping the copy to the device
    files     the replay file format: versioned, checksummed, checked before it is trusted
"""

from dqnfast.memory import available_memory_bytes
from dqnfast.replay.batch import Batch, BatchBuffers
from dqnfast.replay.files import ReplayFileError
from dqnfast.replay.prefetch import NonFinitePriority, Prefetcher
from dqnfast.replay.ring import ReplayMemoryError, ReplayRing

__all__ = [
    "Batch",
    "BatchBuffers",
    "NonFinitePriority",
    "Prefetcher",
    "ReplayFileError",
    "ReplayMemoryError",
    "ReplayRing",
    "available_memory_bytes",
]
