"""Where a ring's frames live: two storage roles behind one interface.

    HostFrames    the C++ ring keeps the frames (mmap'd host memory) and copies each batch's
                  stacks straight into the batch's (pinned) host tensors, in its threads
    DeviceFrames  one torch tensor on a device (``replay.storage=cuda``) keeps the frames; the
                  C++ ring keeps everything else and hands out the slot of each frame of a
                  batch, which the device gathers with one ``index_select``

Both are given the core and the ring's layout by ``attach`` and then answer the same calls:
``write`` (frames of one add, by slot), ``alloc`` (a reusable batch with its ``BatchBuffers``),
``fill`` (sample or gather into such a batch), ``saved_frames`` / ``restore_frames`` (the file
layout ``uint8[num_envs, segment, frame_bytes]``, the same for both, so a file written by one
loads into the other). The ring itself never asks which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dqnfast.replay.batch import Batch, BatchBuffers, meta_tensors

__all__ = ["DeviceFrames", "HostFrames", "Layout", "make_storage"]


@dataclass(frozen=True)
class Layout:
    """A ring's shape: envs, slots per env, one frame's shape and dtypes, frames per observation."""

    num_envs: int
    segment: int
    frame_shape: tuple[int, ...]
    frame_dtype: np.dtype
    torch_dtype: torch.dtype
    frame_bytes: int
    stack: int
    weighted: bool = False  # batches carry importance-sampling weights (a prioritized ring)

    @property
    def capacity(self) -> int:
        return self.num_envs * self.segment

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.stack, *self.frame_shape) if self.stack > 1 else self.frame_shape

    def width(self, shared: bool) -> int:
        """Frames per row: the window of stack + 1 steps (shared rows), or two stacks."""
        return self.stack + 1 if shared else 2 * self.stack


def make_storage(frames_device) -> "HostFrames | DeviceFrames":
    """HostFrames for None, else DeviceFrames on that device ("cpu" or an available CUDA device).

    Anything else is a one-line ValueError naming the fix.
    """
    if frames_device is None:
        return HostFrames()
    try:
        dev = torch.device(frames_device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"frames_device {frames_device!r} is not a device ({e})".replace("\n", " ")) from None
    if dev.type == "cpu":
        return DeviceFrames(dev)
    if dev.type != "cuda":
        raise ValueError(f"frames_device must be None, 'cpu' or a CUDA device, got {frames_device!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"frames_device={str(frames_device)!r} but CUDA is not available here; "
            "keep the frames in RAM (frames_device=None)"
        )
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"frames_device={str(frames_device)!r} but this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return DeviceFrames(dev)


class HostFrames:
    """Frames in the C++ ring's host memory (the default): the core writes them into the batch itself."""

    in_core = True  # the C++ ring stores the frames
    device: torch.device | None = None

    def attach(self, core, layout: Layout) -> None:
        self._core, self.layout = core, layout

    def device_memory_problem(self, capacity: int, frame_bytes: int) -> str | None:
        """Frames in host memory need no device memory."""
        return None

    def write(self, slots: np.ndarray, frames: np.ndarray) -> None:
        """Nothing to do: the core copied the frames during its add."""

    def alloc(self, b: int, shared: bool, pin_memory: bool) -> Batch:
        """A host batch (pinned when asked for) whose own tensors the core writes."""
        L = self.layout
        kw = {"pin_memory": pin_memory}
        meta = meta_tensors(b, L.weighted, **kw)
        if shared:
            window = torch.empty((b, L.stack + 1, *L.frame_shape), dtype=L.torch_dtype, **kw)
            batch = Batch.shared(window, **meta)
            rows, next_rows = window.numpy(), None
        else:
            obs = torch.empty((b, *L.obs_shape), dtype=L.torch_dtype, **kw)
            nxt = torch.empty((b, *L.obs_shape), dtype=L.torch_dtype, **kw)
            batch = Batch(obs, nxt, **meta)
            rows, next_rows = obs.numpy(), nxt.numpy()
        batch.buffers = BatchBuffers(shared, {n: t.numpy() for n, t in meta.items()}, frames=rows, next_obs=next_rows)
        return batch

    def fill(self, out: Batch, indices: np.ndarray | None, beta: float) -> Batch:
        """Samples (indices None) or gathers into ``out``'s own tensors, in the core's threads."""
        bufs = out.buffers
        if bufs is None or bufs.frames is None:
            raise ValueError(
                "out was not made by this ring's make_batch (its frames live in host memory); use ring.make_batch"
            )
        bufs.wait()  # an asynchronous copy out of these tensors must finish before they are refilled
        args = (bufs.frames, bufs.next_obs, *bufs.meta_args())
        if indices is None:
            self._core._sample(*args, beta=beta)
        else:
            self._core._gather(indices, *args, beta=beta)
        return out

    def saved_frames(self, slots: int | None = None) -> np.ndarray:
        """uint8[num_envs, slots, frame_bytes]: a zero-copy view of the first ``slots`` frames of each
        env's segment (all of them by default)."""
        return self._core._storage()["frames"][:, :slots]

    def restore_frames(self, arr: np.ndarray) -> None:
        """From a file's frames array: the first ``arr.shape[1]`` slots of each env's segment."""
        self._core._restore("frames", arr)

    def host_frames(self) -> np.ndarray | None:
        """The frames as frame_dtype values (for the load-time check of float frames)."""
        return self.saved_frames().view(self.layout.frame_dtype)


class DeviceFrames:
    """Frames in one torch tensor on ``device``: written by slot at add, gathered there at sample.

    Only the frame slots and per-row metadata cross PCIe (from pinned staging, asynchronously);
    no frame does. ``torch.device("cpu")`` runs the same path on host tensors (tests, machines
    without a GPU).
    """

    in_core = False

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def attach(self, core, layout: Layout) -> None:
        self._core, self.layout = core, layout
        self.frames = torch.zeros((layout.capacity, *layout.frame_shape), dtype=layout.torch_dtype, device=self.device)

    def device_memory_problem(self, capacity: int, frame_bytes: int) -> str | None:
        """Why ``capacity`` frames do not fit on this CUDA device (None: they fit, or it is the CPU)."""
        device, nbytes = self.device, capacity * frame_bytes
        if device.type != "cuda":
            return None
        budget = int(torch.cuda.mem_get_info(device)[0] * 0.8)  # the networks, optimizer and batches need the rest
        if nbytes <= budget:
            return None
        return (
            f"replay capacity {capacity} needs {nbytes / 1e9:.2f} GB on {device} "
            f"but 80% of its free memory is {budget / 1e9:.2f} GB; lower the capacity to at most "
            f"{budget // frame_bytes} or keep the frames in RAM (replay.storage=cpu)"
        )

    def write(self, slots: np.ndarray, frames: np.ndarray) -> None:
        """Stores frames[i] at slot slots[i] (the slots the core's add returned)."""
        dev = self.device
        # non_blocking from pageable memory: CUDA stages the bytes before returning, and the
        # copy does not wait for the updates queued on the stream
        self.frames[torch.from_numpy(slots).to(dev, non_blocking=True)] = torch.from_numpy(
            np.ascontiguousarray(frames)
        ).to(dev, non_blocking=True)

    def alloc(self, b: int, shared: bool, pin_memory: bool) -> Batch:
        """A batch on the device, with host staging (pinned on CUDA) for the core's output."""
        L, dev = self.layout, self.device
        pin = dev.type == "cuda"
        width = L.width(shared)
        staging = {
            "slots": torch.empty((b, width), dtype=torch.int64, pin_memory=pin),
            **meta_tensors(b, L.weighted, pin_memory=pin),
        }
        window = torch.empty((b, width, *L.frame_shape), dtype=L.torch_dtype, device=dev)
        meta = meta_tensors(b, L.weighted, device=dev)
        if shared:
            batch = Batch.shared(window, **meta)
        elif L.stack > 1:
            batch = Batch(window[:, : L.stack], window[:, L.stack :], **meta)
        else:
            batch = Batch(window[:, 0], window[:, 1], **meta)
        batch.buffers = BatchBuffers(
            shared,
            {n: t.numpy() for n, t in staging.items() if n != "slots"},
            slots=staging["slots"].numpy(),
            staging=staging,
            window=window,
        )
        return batch

    def fill(self, out: Batch, indices: np.ndarray | None, beta: float) -> Batch:
        """Core -> slots and metadata in the staging -> the device gathers the frames (no host sync)."""
        bufs = out.buffers
        if bufs is None or bufs.slots is None:
            raise ValueError(
                f"out was not made by this ring's make_batch (its frames live on {self.device}); use ring.make_batch"
            )
        bufs.wait()  # the staging is refilled only after its last copy to the device finished
        args = (bufs.slots, bufs.shared, *bufs.meta_args())
        if indices is None:
            self._core._sample_slots(*args, beta=beta)
        else:
            self._core._gather_slots(indices, *args, beta=beta)
        dev, staging, window = self.device, bufs.staging, bufs.window
        b, width = bufs.slots.shape
        slots = staging["slots"].to(dev, non_blocking=True)
        torch.index_select(self.frames, 0, slots.view(-1), out=window.view(b * width, *self.layout.frame_shape))
        for name in bufs.meta:  # per-row outputs, weights included
            getattr(out, name).copy_(staging[name], non_blocking=True)
        bufs.record(dev)
        return out

    def saved_frames(self, slots: int | None = None) -> np.ndarray:
        """uint8[num_envs, slots, frame_bytes]: the first ``slots`` frames of each env's segment (all of
        them by default) copied to the host, in a host ring's layout."""
        L = self.layout
        slots = L.segment if slots is None else min(slots, L.segment)
        kept = self.frames.view(L.num_envs, L.segment, *L.frame_shape)[:, :slots].contiguous()
        return kept.cpu().numpy().view(np.uint8).reshape(L.num_envs, slots, L.frame_bytes)

    def restore_frames(self, arr: np.ndarray) -> None:
        """From a file's frames array (the first ``arr.shape[1]`` slots of each env's segment) to the
        device, one env segment at a time (bounded host memory)."""
        L = self.layout
        seg, slots = L.segment, arr.shape[1]
        for e in range(L.num_envs):
            self.frames[e * seg : e * seg + slots].copy_(
                torch.from_numpy(np.ascontiguousarray(arr[e]).view(L.frame_dtype).reshape(slots, *L.frame_shape))
            )

    def host_frames(self) -> np.ndarray | None:
        return None  # not checked on load: reading them back would cost a full copy
