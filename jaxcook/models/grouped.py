"""Grouped matmul for mixture-of-experts: (token, choice) rows sorted by expert, one product per group.

`plan(idx_NK, E)` lays the N*K routed rows out expert by expert, each expert's group padded up
to a multiple of `block` rows, G blocks in all (a static bound: `num_blocks`). Every block
belongs to one expert, so a grouped product is a loop over the blocks that hold routed rows, each
block's [block, in] rows times its expert's [in, out] kernel ("blocks"), or `jax.lax.ragged_dot`
over the same rows with the padded group sizes ("ragged", for backends with a native grouped
kernel). Either way the work is the routed rows plus at most E*(block-1) padding rows, never all
experts on all tokens. On CPU (jax 0.10) `ragged_dot` is lowered as a masked product over every group
(measured: 8 experts cost 10x one dense matmul of the same rows), so "blocks" is the default;
"ragged" is equal on CPU (a test) and untimed on accelerators.

With bf16 products (`model.matmul_dtype=bfloat16`) on a CPU where `jaxcook.kernels.cpu_gemm`'s
library kernel is loaded, the layout has blocks of one row (no padding) and each grouped product
is one FFI call that runs one oneMKL / oneDNN bf16 GEMM per expert group (`_kernel_grouped`), so
the experts' products run on AMX tiles like the dense projections. Elsewhere bf16 products are
XLA's, on bf16-rounded operands.

Padding rows read a zero row and are never read back; `combine` gathers each (token, choice)
row from its slot. With `valid_NK` (expert parallelism: the choices that go to this device's
experts), the other choices get no row at all and `combine` gives them zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from jaxcook.kernels import cpu_gemm


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Dispatch:
    slot_NK: jax.Array  # int32: row of the grouped layout that holds each (token, choice)
    src_R: jax.Array  # int32: token of each grouped row (N: a padding row, reads zeros)
    block_expert_G: jax.Array  # int32: expert of each block
    group_sizes_E: jax.Array  # int32: rows per expert, padded to the block (sums to <= R)
    used_blocks: jax.Array  # int32 scalar: blocks holding routed rows (the first ones)
    block: int = field(metadata={"static": True}, default=1)
    masked: bool = field(metadata={"static": True}, default=False)  # slot R: a dropped choice


def block_rows(rows: int, experts: int) -> int:
    """Rows per block: about a quarter of an even share (so padding costs <= ~25%), a power of
    two in [1, 256]; 1 when there are fewer rows than experts (decode)."""
    if rows <= experts:
        return 1
    b = 1
    while b * 2 <= min(256, rows / (4 * experts)):
        b *= 2
    return b


def num_blocks(rows: int, experts: int, block: int) -> int:
    # sum_e ceil(n_e / b) <= (rows + E (b - 1)) / b, and <= rows (only nonempty groups count)
    return min(rows, -(-(rows + experts * (block - 1)) // block))


def plan(
    idx_NK: jax.Array, num_experts: int, valid_NK: jax.Array | None = None, block: int | None = None
) -> Dispatch:
    """The grouped layout of the N x K choices (`valid_NK`: only those; the bound stays N x K),
    in blocks of `block` rows (default `block_rows`; 1 for the grouped kernel: no padding)."""
    N, K = idx_NK.shape
    M, E = N * K, num_experts
    b = block_rows(M, E) if block is None else block
    G = num_blocks(M, E, b)
    e_M = idx_NK.reshape(M).astype(jnp.int32)
    if valid_NK is not None:  # dropped choices sort after every expert (a group E of their own)
        e_M = jnp.where(valid_NK.reshape(M), e_M, E)
    order_M = jnp.argsort(e_M, stable=True)  # sorted position -> assignment
    sorted_pos_M = jnp.zeros((M,), jnp.int32).at[order_M].set(jnp.arange(M, dtype=jnp.int32))
    counts_E = jnp.zeros((E + 1,), jnp.int32).at[e_M].add(1)[:E]
    start_E = jnp.cumsum(counts_E) - counts_E
    padded_E = (counts_E + b - 1) // b * b
    end_E = jnp.cumsum(padded_E)
    e_safe_M = jnp.minimum(e_M, E - 1)
    slot_M = (end_E - padded_E)[e_safe_M] + sorted_pos_M - start_E[e_safe_M]
    if valid_NK is not None:
        slot_M = jnp.where(e_M < E, slot_M, G * b)  # the zero row `combine` appends
    rows_M = jnp.arange(M, dtype=jnp.int32) // K
    src_R = jnp.full((G * b,), N, jnp.int32).at[slot_M].set(rows_M, mode="drop")
    block_expert_G = jnp.searchsorted(end_E, jnp.arange(G, dtype=jnp.int32) * b, side="right")
    return Dispatch(
        slot_M.reshape(N, K),
        src_R,
        jnp.minimum(block_expert_G, E - 1).astype(jnp.int32),
        padded_E,
        end_E[-1] // b,
        b,
        valid_NK is not None,
    )


def dispatch(x_ND: jax.Array, d: Dispatch) -> jax.Array:
    """Rows in grouped order, [G, block, D]."""
    x_ext = jnp.concatenate([x_ND, jnp.zeros((1, x_ND.shape[1]), x_ND.dtype)])
    return x_ext[d.src_R].reshape(-1, d.block, x_ND.shape[1])


def combine(y_GBD: jax.Array, d: Dispatch) -> jax.Array:
    """Each (token, choice)'s row back, [N, K, D] (zeros for dropped choices)."""
    y_RD = y_GBD.reshape(-1, y_GBD.shape[-1])
    if d.masked:
        y_RD = jnp.concatenate([y_RD, jnp.zeros((1, y_RD.shape[1]), y_RD.dtype)])
    return y_RD[d.slot_NK]


def uses_kernel(x: jax.Array, impl: str) -> bool:
    """Whether bf16 grouped products of these rows ([rows, ...] or [G, block, ...]) run the
    grouped library kernel: on CPU with the kernel loaded, outside a `shard_map`, more than
    `cpu_gemm.SMALL_M` rows, `impl="blocks"`. Its layout needs no padding (`plan(block=1)`)."""
    rows = x.shape[0] * (x.shape[1] if x.ndim == 3 else 1)
    return impl == "blocks" and rows > cpu_gemm.SMALL_M and cpu_gemm.kernel_in_use() and not _varying(x)


def grouped_matmul(
    x_GBI: jax.Array, w_EIO: jax.Array, d: Dispatch, impl: str = "blocks", bf16: bool = False
) -> jax.Array:
    """`x_row @ w[expert of row]` for every grouped row: [G, block, O]. With `bf16`: bf16
    operands, f32 accumulation, in x's dtype (see `_kernel_grouped`)."""
    if bf16:
        G, B, In = x_GBI.shape
        if uses_kernel(x_GBI, impl):
            y = _kernel_grouped(x_GBI.reshape(G * B, In), w_EIO, d.group_sizes_E)
            return y.reshape(G, B, -1)
        # bf16-rounded operands in x's dtype: their products and f32 sums are the kernel's numbers
        # (up to summation order), with an f32 result
        rounded = [a.astype(jnp.bfloat16).astype(x_GBI.dtype) for a in (x_GBI, w_EIO)]
        return grouped_matmul(*rounded, d, impl)
    if impl == "ragged":
        G, B, In = x_GBI.shape
        y = jax.lax.ragged_dot(x_GBI.reshape(G * B, In), w_EIO, d.group_sizes_E)
        return y.reshape(G, B, -1)
    return _block_matmul(x_GBI, w_EIO, d.block_expert_G, d.used_blocks)


@jax.custom_vjp
def _block_matmul(x_GBI: jax.Array, w_EIO: jax.Array, expert_G: jax.Array, used: jax.Array) -> jax.Array:
    """Each block's rows times its expert's kernel, one block at a time for the `used` blocks
    (the rest stay zero: no routed row lives there). A loop, not a batched product of the
    gathered [G, in, out] kernels: on CPU that gather alone cost as much as a dense product of
    the same rows (2048 x 2 rows, 8 experts, 512 -> 1024: gather 20 ms, batched 53-60 ms, the
    loop 32 ms, one dense dot 19-22 ms). The backward runs the same loops for dx and dw."""
    return _blocks_times(x_GBI, w_EIO, expert_G, used, transpose=False)


def _to_varying(zeros: jax.Array, *like: jax.Array) -> jax.Array:
    """`zeros` varying over the manual mesh axes `like` vary over (a loop carry inside a
    shard_map must have its body's type)."""
    axes = tuple(sorted(frozenset().union(*(_varying(a) for a in like))))
    if not axes:
        return zeros
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(zeros, axes, to="varying")
    return jax.lax.pvary(zeros, axes)


def _blocks_times(x_GBI, w_EIO, expert_G, used, *, transpose: bool):
    """[G, block, out]: block g's rows times `w[expert_G[g]]` (its transpose), g < used."""
    G, B, _ = x_GBI.shape
    out = w_EIO.shape[1 if transpose else 2]
    dims = (((1,), (1 if transpose else 0,)), ((), ()))

    def body(g, y):
        w = jax.lax.dynamic_index_in_dim(w_EIO, expert_G[g], 0, keepdims=False)
        xw = jax.lax.dot_general(x_GBI[g], w, dims, preferred_element_type=jnp.float32)
        return jax.lax.dynamic_update_index_in_dim(y, xw.astype(y.dtype), g, 0)

    y0 = _to_varying(jnp.zeros((G, B, out), x_GBI.dtype), x_GBI, w_EIO, expert_G)
    return jax.lax.fori_loop(0, used, body, y0)


def _blocks_grad_w(x_GBI, dy_GBO, w_EIO, expert_G, used):
    """[E, in, out]: the sum over the used blocks of `x_g^T dy_g` into their experts' slots."""

    def body(g, dw):
        e = expert_G[g]
        xt_dy = jax.lax.dot_general(
            x_GBI[g], dy_GBO[g], (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32
        )
        cur = jax.lax.dynamic_index_in_dim(dw, e, 0, keepdims=False)
        return jax.lax.dynamic_update_index_in_dim(dw, cur + xt_dy.astype(dw.dtype), e, 0)

    dw0 = _to_varying(jnp.zeros(w_EIO.shape, w_EIO.dtype), x_GBI, dy_GBO, expert_G)
    return jax.lax.fori_loop(0, used, body, dw0)


def _block_matmul_fwd(x_GBI, w_EIO, expert_G, used):
    return _block_matmul(x_GBI, w_EIO, expert_G, used), (x_GBI, w_EIO, expert_G, used)


def _varying(x: jax.Array) -> frozenset:
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)  # jax 0.10; `vma` in other releases
    return frozenset(mat.varying) if mat is not None else frozenset(getattr(aval, "vma", ()))


def _summed_to(ct: jax.Array, like: jax.Array) -> jax.Array:
    """`ct` summed over the manual mesh axes (inside a shard_map) it varies over and `like` does
    not: what autodiff does for an operand that is the same on every device of those axes."""
    extra = tuple(sorted(_varying(ct) - _varying(like)))
    return jax.lax.psum(ct, extra) if extra else ct


def _block_matmul_bwd(res, dy_GBO):
    x_GBI, w_EIO, expert_G, used = res
    dx_GBI = _blocks_times(dy_GBO, w_EIO, expert_G, used, transpose=True).astype(x_GBI.dtype)
    dw_EIO = _blocks_grad_w(x_GBI, dy_GBO, w_EIO, expert_G, used)
    return _summed_to(dx_GBI, x_GBI), _summed_to(dw_EIO, w_EIO), None, None


_block_matmul.defvjp(_block_matmul_fwd, _block_matmul_bwd)


@jax.custom_vjp
def _kernel_grouped(x_RI: jax.Array, w_EIO: jax.Array, sizes_E: jax.Array) -> jax.Array:
    """The grouped rows [R, I] times their experts' kernels in one FFI call (one library bf16
    product per expert group, `cpu_gemm.grouped_gemm`), in x's dtype. The backward is two more
    grouped calls: dx from the kernels read transposed, dw per group, each only when that operand
    is differentiated (a LoRA step never forms the frozen experts' dw)."""
    return cpu_gemm.grouped_gemm(x_RI, w_EIO, sizes_E).astype(x_RI.dtype)


def _kernel_grouped_fwd(x, w, sizes):
    flags = (() if x.perturbed else None, () if w.perturbed else None)
    # dw reads x only as bf16 operands: keep that copy (half the bytes of an f32 residual)
    x_saved = x.value.astype(jnp.bfloat16) if w.perturbed else None
    return _kernel_grouped(x.value, w.value, sizes.value), (x_saved, w.value, sizes.value, flags)


def _kernel_grouped_bwd(res, dy_RO):
    x_RI, w_EIO, sizes_E, (x_grad, w_grad) = res  # x_RI: bf16, kept only for dw
    dx = dw = None
    if x_grad is not None:
        dx = cpu_gemm.grouped_gemm(dy_RO, w_EIO, sizes_E, trans_w=True).astype(dy_RO.dtype)  # = x's
    if w_grad is not None:
        dw = cpu_gemm.grouped_gemm_tn(x_RI, dy_RO, sizes_E).astype(w_EIO.dtype)
    return dx, dw, None


_kernel_grouped.defvjp(_kernel_grouped_fwd, _kernel_grouped_bwd, symbolic_zeros=True)
