"""The CPU probe behind the precision default: flags, torch's dispatch level and oneDNN must agree."""

from __future__ import annotations

from dqnfast import hardware
from dqnfast.hardware import CpuFeatures

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse avx avx2 fma {extra}

processor\t: 1
model name\t: something else entirely
flags\t\t: fpu
"""


def _features(tmp_path, extra: str, onednn_bf16: bool) -> CpuFeatures:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    model, flags = hardware._cpuinfo(path)
    return CpuFeatures(model=model, flags=flags, torch_capability="AVX2", onednn_bf16=onednn_bf16)


def test_an_avx2_cpu_has_no_native_bf16_even_where_onednn_would_emulate_it(tmp_path):
    f = _features(tmp_path, "", onednn_bf16=True)
    assert f.model == "AMD EPYC 7B13"  # the first processor's block only
    assert f.flags == {"avx2"}
    assert not f.native_bf16
    assert f.describe() == "AMD EPYC 7B13, AVX2, no native bf16"


def test_avx512_bf16_or_amx_is_native_bf16_when_onednn_agrees(tmp_path):
    f = _features(tmp_path, "avx512f avx512bw avx512_bf16", onednn_bf16=True)
    assert f.native_bf16 and f.isa == "AVX-512"
    amx = _features(tmp_path, "avx512f amx_tile amx_bf16", onednn_bf16=True)
    assert amx.native_bf16 and amx.describe().endswith("AMX, native bf16")
    # a torch build whose oneDNN does not take the bf16 path gets no bf16 default, whatever the CPU says
    assert not _features(tmp_path, "avx512f avx512_bf16", onednn_bf16=False).native_bf16


def test_a_machine_without_cpuinfo_is_described_not_refused(tmp_path):
    model, flags = hardware._cpuinfo(tmp_path / "missing")
    assert (model, flags) == ("unknown", frozenset())


def test_the_probe_of_this_machine_is_consistent_and_cached():
    f = hardware.probe()
    assert f is hardware.probe()
    assert f.native_bf16 == (f.onednn_bf16 and bool(f.flags & {"avx512_bf16", "amx_bf16"}))
    assert f.describe().startswith(f.model)
