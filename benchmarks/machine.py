"""What a benchmark ran on: the CPU, the ISA flags that matter, the load, and measured matmul peaks.

Every benchmark prints `describe()` first, so a table row can always be traced to its machine.
Peaks are one 2048^3 product timed in this process: XLA's f32 dot, jaxcook's bf16 kernel product
(`jaxcook.kernels.cpu_gemm`: oneMKL on AMX where available), and PyTorch's f32 and bf16 matmuls.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp

FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        words = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return []
    return [f for f in FLAGS if f in words]


def _time(fn, iters: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t) / iters


def jax_peaks(n: int = 2048, iters: int = 5) -> dict[str, float]:
    """GFLOP/s of an n^3 product: XLA f32, and the bf16 kernel product (f32 accumulation)."""
    from jaxcook.kernels.cpu_gemm import gemm

    a32 = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    a16 = a32.astype(jnp.bfloat16)
    f32 = jax.jit(lambda x: x @ x)
    b16 = jax.jit(lambda x: gemm(x, x))
    return {
        "jax f32": 2 * n**3 / _time(lambda: f32(a32).block_until_ready(), iters) / 1e9,
        "jax bf16": 2 * n**3 / _time(lambda: b16(a16).block_until_ready(), iters) / 1e9,
    }


def torch_peaks(n: int = 2048, iters: int = 5) -> dict[str, float]:
    import torch

    out = {}
    for name, dtype in (("torch f32", torch.float32), ("torch bf16", torch.bfloat16)):
        a = torch.randn((n, n), generator=torch.Generator().manual_seed(0)).to(dtype)
        out[name] = 2 * n**3 / _time(lambda a=a: a @ a, iters) / 1e9
    return out


def describe(*, torch_too: bool = True) -> str:
    from jaxcook.kernels.cpu_gemm import kernel_status

    peaks = jax_peaks() if jax.default_backend() == "cpu" else {}
    if torch_too:
        peaks.update(torch_peaks())
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join(
        [
            f"machine: {cpu_model()}, {os.cpu_count()} cores, flags {' '.join(cpu_flags()) or 'none'}, "
            f"load average {load}",
            f"jax {jax.__version__} ({jax.default_backend()}), bf16 kernel: {kernel_status()}",
            "matmul peaks (2048^3, GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()),
        ]
    )


if __name__ == "__main__":
    print(describe())
