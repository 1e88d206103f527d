"""bf16 matrix products on CPU through oneDNN or oneMKL (AMX tiles or AVX512-BF16 where present).

XLA:CPU in jaxlib 0.10 runs a bf16 dot no faster than an f32 one, while the bf16 GEMMs of oneDNN
(`dnnl_gemm_bf16bf16f32`, the library PyTorch's CPU matmuls use) and oneMKL
(`cblas_gemm_bf16bf16f32`) run bf16 operands with f32 accumulation on the processor's bf16 units.
`gemm(a, b, trans_a, trans_b)` = `op(a) @ op(b)` in float32 from bf16 operands, as an XLA FFI call
into `cpu_gemm.cc`; a transposed operand is read in place, never copied. `grouped_gemm` and
`grouped_gemm_tn` are the MoE experts' products: rows sorted by expert, one library GEMM per
expert group inside one FFI call (`jaxcook.models.grouped`).

Which library: `JAXCOOK_CPU_GEMM=onednn|mkl|xla`, or by default the first installed of the
processor's order: oneDNN then oneMKL on AMD and others, oneMKL then oneDNN on Intel. oneMKL keeps
its fast paths for Intel processors: on an AMD EPYC (Zen 5, AVX512-BF16) it ran a 2048^3 bf16
product at 25-43 GFLOP/s where oneDNN ran 78-90 in the same minutes (both under load). Both come
with the `cpu` extra (`onednn-cpu-gomp`, `mkl`), both on GNU OpenMP like PyTorch.

Products with few rows (m <= `SMALL_M`: a decode step's few sample rows) take XLA's bf16 dot
instead: on the 2-core AVX512-BF16 EPYC oneMKL needed 60 ms for SmolLM2's 8-row unembedding
that XLA's bf16 dot does in 24 ms (8 x 576 x 1536 projections: 0.49 vs 0.22 ms; both at load
~10). Same operands and f32 accumulation either way.

Where no kernel can run (another platform, no AMX / AVX512-BF16, neither library, no C++
compiler, or `JAXCOOK_CPU_GEMM=xla`), `gemm` is `jnp.dot` with f32 accumulation: the same
numbers up to summation order, at XLA's speed. `kernel_status()` says which one a process uses.

Build: on first use g++ compiles `cpu_gemm.cc` against jaxlib's FFI headers (no library is linked:
the entry point is looked up at load) into `$JAXCOOK_CACHE/kernels/<hash>/`, once per source and
jaxlib version.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

TARGET = "jaxcook_gemm_bf16"
GROUPED_TARGET = "jaxcook_grouped_gemm_bf16"
GROUPED_TN_TARGET = "jaxcook_grouped_gemm_tn_bf16"
ENV = "JAXCOOK_CPU_GEMM"
_SOURCE = Path(__file__).with_name("cpu_gemm.cc")
SMALL_M = 32  # at most this many rows: XLA's dot (see the module doc)
_MKL_THREADING_GNU = 3  # mkl_set_threading_layer code: the GNU OpenMP runtime


@dataclass(frozen=True)
class Library:
    kind: int  # jaxcook_gemm_init's code
    distribution: str  # the PyPI package that ships it
    file_prefix: str
    entry: str


LIBRARIES = {
    "onednn": Library(1, "onednn-cpu-gomp", "libdnnl.so", "dnnl_gemm_bf16bf16f32"),
    "mkl": Library(0, "mkl", "libmkl_rt.so", "cblas_gemm_bf16bf16f32"),
}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_has_bf16_units(info: str) -> bool:
    return " amx_bf16" in info or " avx512_bf16" in info


def library_order(info: str | None = None) -> tuple[str, ...]:
    """The libraries to try, best first, from `JAXCOOK_CPU_GEMM` or the processor's vendor."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice and choice != "xla" and choice not in LIBRARIES:
        raise ValueError(f"{ENV}={choice!r}: expected one of onednn, mkl, xla")
    if choice:
        return () if choice == "xla" else (choice,)
    info = _cpuinfo() if info is None else info
    return ("mkl", "onednn") if "GenuineIntel" in info else ("onednn", "mkl")


def _library_file(lib: Library) -> Path | None:
    from importlib import metadata

    try:
        files = metadata.distribution(lib.distribution).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name.startswith(lib.file_prefix):
            return Path(f.locate()).resolve()
    return None


def _build() -> Path:
    from jaxcook.assets import cache_dir

    key = hashlib.sha256(_SOURCE.read_bytes() + jax.__version__.encode())
    out_dir = cache_dir() / "kernels" / key.hexdigest()[:16]
    lib = out_dir / "libjaxcook_gemm.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"build-{os.getpid()}.so"
    cmd = [shutil.which("g++") or "g++", "-O2", "-std=c++17", "-shared", "-fPIC"]
    subprocess.run(
        [*cmd, f"-I{jax.ffi.include_dir()}", str(_SOURCE), "-o", str(tmp)],
        check=True,
        capture_output=True,
        text=True,
    )
    tmp.replace(lib)  # atomic: a concurrent process sees a whole library or none
    return lib


def _load(name: str, path: Path) -> int:
    """Load a library with its symbols global (its own plug-ins resolve against it) and return its
    GEMM's address."""
    handle = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    if name == "mkl":
        handle.MKL_Set_Threading_Layer(_MKL_THREADING_GNU)  # the OpenMP runtime PyTorch loads too
    return ctypes.cast(getattr(handle, LIBRARIES[name].entry), ctypes.c_void_p).value


@functools.cache
def kernel_status() -> str:
    """'onednn' or 'mkl' when that library's kernel is registered for this process, else why not
    (XLA is used)."""
    order = library_order()
    if not order:
        return f"off: {ENV}=xla"
    info = _cpuinfo()
    if not _cpu_has_bf16_units(info):
        return "off: the CPU has neither amx_bf16 nor avx512_bf16"
    found = [(name, path) for name in order if (path := _library_file(LIBRARIES[name])) is not None]
    if not found:
        wanted = " or ".join(LIBRARIES[name].distribution for name in order)
        return f"off: {wanted} is not installed (pip install 'jaxcook[cpu]')"
    if shutil.which("g++") is None:
        return "off: no g++ to build the kernel"
    name, path = found[0]
    try:
        kernel = ctypes.CDLL(str(_build()))
        if kernel.jaxcook_gemm_init(LIBRARIES[name].kind, ctypes.c_void_p(_load(name, path))) != 0:
            raise OSError(f"jaxcook_gemm_init refused {name}")
        for target, handler in (
            (TARGET, kernel.JaxcookGemmBf16),
            (GROUPED_TARGET, kernel.JaxcookGroupedGemmBf16),
            (GROUPED_TN_TARGET, kernel.JaxcookGroupedGemmTNBf16),
        ):
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler), platform="cpu")
    except (OSError, subprocess.CalledProcessError, AttributeError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        log.warning("bf16 kernel (%s) unavailable, using XLA: %s", name, detail.strip().splitlines()[-1:])
        return f"off: build or load failed ({type(e).__name__})"
    return name


def _use_kernel() -> bool:
    return jax.default_backend() == "cpu" and kernel_status() in LIBRARIES


def kernel_in_use() -> bool:
    """Whether `gemm` and the grouped products run the library kernel in this process."""
    return _use_kernel()


def gemm(a: jax.Array, b: jax.Array, *, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """`op(a) @ op(b)` as float32 from bf16 operands; a, b are 2-D. Not differentiable: see `dot`."""
    a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    if m <= SMALL_M or not _use_kernel():
        return jnp.dot(a.T if trans_a else a, b.T if trans_b else b, preferred_element_type=jnp.float32)
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32), vmap_method="sequential")
    return call(a, b, trans_a=np.int64(trans_a), trans_b=np.int64(trans_b))


def _group_of_rows(sizes_E: jax.Array, rows: int) -> jax.Array:
    """The group of each of `rows` sorted rows ([rows], E for a row past the last group)."""
    ends = jnp.cumsum(sizes_E)
    return jnp.searchsorted(ends, jnp.arange(rows, dtype=ends.dtype), side="right")


def grouped_gemm(
    x_RK: jax.Array, w_EKN: jax.Array, sizes_E: jax.Array, *, trans_w: bool = False
) -> jax.Array:
    """[R, N] float32 from bf16 operands: the `sizes_E[e]` consecutive rows of group e (rows sorted
    by group) times `op(w[e])` (w [E, K, N], or [E, N, K] with `trans_w`); rows past the last group
    are zero. One library product per nonempty group; without the kernel, XLA's `ragged_dot`."""
    x, w = x_RK.astype(jnp.bfloat16), w_EKN.astype(jnp.bfloat16)
    sizes = sizes_E.astype(jnp.int32)
    n = w.shape[1] if trans_w else w.shape[2]
    if not _use_kernel():
        y = jax.lax.ragged_dot(
            x, jnp.swapaxes(w, 1, 2) if trans_w else w, sizes, preferred_element_type=jnp.float32
        )
        return jnp.where((_group_of_rows(sizes, x.shape[0]) < w.shape[0])[:, None], y, 0.0)
    call = jax.ffi.ffi_call(
        GROUPED_TARGET, jax.ShapeDtypeStruct((x.shape[0], n), jnp.float32), vmap_method="sequential"
    )
    return call(x, w, sizes, trans_w=np.int64(trans_w))


def grouped_gemm_tn(x_RK: jax.Array, dy_RN: jax.Array, sizes_E: jax.Array) -> jax.Array:
    """[E, K, N] float32 from bf16 operands: `x_e^T dy_e` over each group's rows (the weight
    gradient of `grouped_gemm`); zero for an empty group."""
    x, dy = x_RK.astype(jnp.bfloat16), dy_RN.astype(jnp.bfloat16)
    sizes = sizes_E.astype(jnp.int32)
    E, K, N = sizes.shape[0], x.shape[1], dy.shape[1]
    if not _use_kernel():
        onehot_RE = jax.nn.one_hot(_group_of_rows(sizes, x.shape[0]), E, dtype=jnp.bfloat16)
        return jnp.einsum("re,rk,rn->ekn", onehot_RE, x, dy, preferred_element_type=jnp.float32)
    call = jax.ffi.ffi_call(
        GROUPED_TN_TARGET, jax.ShapeDtypeStruct((E, K, N), jnp.float32), vmap_method="sequential"
    )
    return call(x, dy, sizes)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dot(x: jax.Array, w: jax.Array, trans_w: bool = False) -> jax.Array:
    """`x @ op(w)` for x [..., K], in x's dtype, with bf16 operands and f32 accumulation; the
    backward computes only the gradients of the differentiated operands."""
    x2 = x.reshape(-1, x.shape[-1])
    y = gemm(x2, w, trans_b=trans_w)
    return y.reshape(*x.shape[:-1], y.shape[-1]).astype(x.dtype)


def _dot_fwd(x, w, trans_w):
    # The residual structure records (statically) which operands need a gradient.
    flags = (() if x.perturbed else None, () if w.perturbed else None)
    return dot(x.value, w.value, trans_w), (x.value, w.value, flags)


def _dot_bwd(trans_w, res, dy):
    x, w, (x_grad, w_grad) = res
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    dx = dw = None  # None: a symbolic zero for an operand nobody differentiates
    if x_grad is not None:  # dx = dy @ op(w)^T
        dx = gemm(dy2, w, trans_b=not trans_w).reshape(x.shape).astype(x.dtype)
    if w_grad is not None:  # d op(w) = x^T dy, so dw = x^T dy, or dy^T x for a transposed w
        dw = (gemm(dy2, x2, trans_a=True) if trans_w else gemm(x2, dy2, trans_a=True)).astype(w.dtype)
    return dx, dw


dot.defvjp(_dot_fwd, _dot_bwd, symbolic_zeros=True)
