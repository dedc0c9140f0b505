"""bonekit.accel: the precision a stage really runs in."""

import pytest

from bonekit import accel

AVX2_EPYC = "flags\t\t: fpu vme sse sse2 ssse3 fma avx avx2 bmi2\n"
AVX512_BF16_EPYC = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
ARM_BF16 = "Features\t: fp asimd evtstrm aes sve bf16 i8mm\n"


def test_cpu_bf16_flags():
    assert not accel.cpu_bf16_native(AVX2_EPYC)
    assert accel.cpu_bf16_native(AVX512_BF16_EPYC)
    assert accel.cpu_bf16_native(ARM_BF16)
    assert not accel.cpu_bf16_native("flags : avx512f avx512bw\n")  # AVX512 without its BF16 extension


def test_bf16_on_a_cpu_without_it_runs_fp32_and_says_so(monkeypatch):
    monkeypatch.delenv("BONEKIT_CPU_BF16", raising=False)
    accel._warn_emulated_bf16.cache_clear()  # warned once per process: maybe already
    with pytest.warns(UserWarning, match="no hardware bf16.*fp32"):
        assert accel.resolve_precision("bf16", cuda=False, cpu_bf16=False) == "no"
    assert accel.resolve_precision("bf16", cuda=False, cpu_bf16=True) == "bf16"
    assert accel.resolve_precision("bf16", cuda=True, cpu_bf16=False) == "bf16"  # a GPU computes it
    assert accel.resolve_precision("auto", cuda=False) == "no"
    assert accel.resolve_precision("auto", cuda=True) == "bf16"
    monkeypatch.setenv("BONEKIT_CPU_BF16", "1")  # asked for explicitly: kept
    assert accel.resolve_precision("bf16", cuda=False, cpu_bf16=False) == "bf16"
    with pytest.raises(ValueError, match="choose one of"):
        accel.resolve_precision("fp8")
