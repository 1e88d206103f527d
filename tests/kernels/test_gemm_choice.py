"""Which bf16 GEMM library a process picks: by `JAXCOOK_CPU_GEMM`, else by processor vendor (no
library is loaded here, so these run in the default suite)."""

import pytest

from jaxcook.kernels import cpu_gemm

INTEL = "vendor_id\t: GenuineIntel\nflags\t\t: avx512f amx_bf16\n"
AMD = "vendor_id\t: AuthenticAMD\nflags\t\t: avx512f avx512_bf16\n"


def test_vendor_picks_the_order(monkeypatch):
    monkeypatch.delenv(cpu_gemm.ENV, raising=False)
    assert cpu_gemm.library_order(INTEL) == ("mkl", "onednn")
    assert cpu_gemm.library_order(AMD) == ("onednn", "mkl")


@pytest.mark.parametrize(("value", "order"), [("onednn", ("onednn",)), ("MKL", ("mkl",)), ("xla", ())])
def test_environment_overrides_the_vendor(monkeypatch, value, order):
    monkeypatch.setenv(cpu_gemm.ENV, value)
    assert cpu_gemm.library_order(INTEL) == order
    assert cpu_gemm.library_order(AMD) == order


def test_an_unknown_library_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV, "openblas")
    with pytest.raises(ValueError, match=r"^JAXCOOK_CPU_GEMM='openblas': expected one of onednn, mkl, xla$"):
        cpu_gemm.library_order(AMD)
