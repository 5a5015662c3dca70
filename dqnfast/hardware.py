"""What the CPU offers, probed once at start: the facts the thread and precision defaults follow.

The machines dqnfast runs on differ in ways that change which default is fastest: a bf16 autocast
that runs 1.5x faster on a CPU with native bf16 (AVX-512 BF16 or AMX) runs several times slower on
one without it, where oneDNN emulates bf16 in fp32. So no precision default is a constant: it is
chosen from this probe, and the start-up line says what was found.

The probe reads three sources, each of which can be wrong alone:

- ``/proc/cpuinfo``'s flags (what the CPU reports: ``avx512_bf16``, ``amx_bf16``, ``avx2``, ...);
- torch's dispatch level (``torch.backends.cpu.get_cpu_capability()``: the widest vector ISA its
  kernels use here, e.g. ``AVX512``, ``AVX2``, ``DEFAULT``);
- oneDNN's own answer (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``), which is what torch's bf16
  convolutions consult.

bf16 counts as native only when the CPU reports a bf16 instruction set and oneDNN agrees.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

# The CPU flags that make bf16 arithmetic native (dot products in hardware, not emulated).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class CpuFeatures:
    """The probe's result. ``flags``: the CPU's reported flags of note (lower case)."""

    model: str
    flags: frozenset[str]
    torch_capability: str
    onednn_bf16: bool

    @property
    def native_bf16(self) -> bool:
        return self.onednn_bf16 and any(f in self.flags for f in BF16_FLAGS)

    @property
    def isa(self) -> str:
        """The widest vector ISA, as a user reads it: AMX, AVX-512, AVX2 or the torch dispatch level."""
        if "amx_tile" in self.flags or "amx_bf16" in self.flags:
            return "AMX"
        if "avx512f" in self.flags:
            return "AVX-512"
        if "avx2" in self.flags:
            return "AVX2"
        return self.torch_capability or "unknown"

    def describe(self) -> str:
        """One phrase for the start-up line, e.g. ``AMD EPYC, AVX-512, native bf16``."""
        bf16 = "native bf16" if self.native_bf16 else "no native bf16"
        return f"{self.model}, {self.isa}, {bf16}"


_FLAGS_OF_NOTE = frozenset(
    {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}
)


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """(model name, flags of note) of the first processor; ("unknown", {}) where there is no cpuinfo."""
    model, flags = "unknown", frozenset()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: the cores of one machine agree
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            model = " ".join(value.split()) or model
        elif key in ("flags", "Features"):
            flags = frozenset(value.split()) & _FLAGS_OF_NOTE
    return model, flags


def _torch_facts() -> tuple[str, bool]:
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older or exotic builds: the flags still decide
        capability = "unknown"
    try:
        onednn_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - a build without oneDNN has no fast bf16 path at all
        onednn_bf16 = False
    return capability, onednn_bf16


@functools.lru_cache(maxsize=1)
def probe() -> CpuFeatures:
    """The CPU's features, probed once per process."""
    model, flags = _cpuinfo()
    capability, onednn_bf16 = _torch_facts()
    return CpuFeatures(model=model, flags=flags, torch_capability=capability, onednn_bf16=onednn_bf16)
