"""The routed experts of a MoE block, on one device or expert-parallel over the mesh's `expert` axis.

    y_ND = routed(experts, x_ND, w_NK, idx_NK, E)      = sum_k w_NK * expert_{idx_NK}(x_N)

Without a mesh (or with `mesh.expert == 1`) this is the grouped product of `grouped.py` over
every expert, and XLA partitions it like any other op.

Expert parallel (`mesh.expert = X > 1`): the experts' weights [E, in, out] (their LoRA factors,
GPT-OSS's biases, and so the optimizer state) are split over `expert` along E, so a device holds
E / X experts. The batch is split over `data` x `fsdp` x `expert`, so outside the experts
`expert` is data parallelism. The routing (router, top-k) runs there, on each device's own
tokens; then, in a `shard_map` over the whole mesh:

1. all-gather over `expert`: every device of an expert group gets the group's tokens [X*n, D],
   their expert ids and weights (Megatron's "allgather" dispatcher, not an all-to-all);
2. each device groups the choices that go to its own E / X experts (`grouped.plan` with a mask:
   the others get no row) and multiplies them with its experts' kernels;
3. it weights its rows and sums them per token (zero for the other devices' choices);
4. reduce-scatter (`psum_scatter`) over `expert`: each device gets its own n tokens' sums.

The backward pass is the transpose: all-gather of the output gradients, reduce-scatter of the
input gradients; the expert weights' gradients are summed over `data` x `fsdp` only (each expert
lives on one device of its group). Why this rather than an all-to-all: it is dropless and exact
with static shapes (no capacity factor, so it equals one device to rounding), uses the two
collectives every backend has (CPU included), and moves X*n*D activations per device each way,
the same as an all-to-all whose buffers are sized for the worst case (every choice to one
device), which is what a dropless static-shape all-to-all needs. The cost is that the grouped
product is sized for that worst case too (all X*n*K choices could pick this device), so the
expert FLOPs per device are those of the group's tokens, not 1 / X of them; what expert
parallelism buys here is the memory (weights, adapters, Adam moments, grads: 1 / X per device).

Inside the `shard_map` the expert weights enter as their `expert` shards, gathered over `fsdp`
and `tensor` (as FSDP gathers a weight for its matmul); `tensor` devices of a group compute the
same rows. Rows of a `shard_map` must split evenly: the tokens are padded up to a multiple of
the batch shards with choices that no expert takes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxcook.engine import sharding
from jaxcook.models import grouped


def local(experts: nnx.Module, x_ND, w_NK, idx_NK, num_experts: int, impl: str, valid_NK=None):
    """sum_k w_NK * expert(x) over the choices in `valid_NK` (all by default), [N, D]."""
    bf16 = any(getattr(m, "bf16_matmul", False) for _, m in nnx.iter_modules(experts))
    kernel = bf16 and grouped.uses_kernel(x_ND, impl)  # N rows; N x K >= N are grouped
    d = grouped.plan(idx_NK, num_experts, valid_NK, block=1 if kernel else None)
    y_NKD = grouped.combine(experts(grouped.dispatch(x_ND, d), d, impl), d)
    return jnp.einsum("nk,nkd->nd", w_NK.astype(y_NKD.dtype), y_NKD)


def routed(experts: nnx.Module, x_ND, w_NK, idx_NK, num_experts: int, impl: str = "blocks"):
    """The routed experts' weighted sum [N, D]; expert-parallel on a mesh with `expert` > 1."""
    mesh = sharding.active_mesh()
    if mesh is None or mesh.shape.get("expert", 1) == 1:
        return local(experts, x_ND, w_NK, idx_NK, num_experts, impl)
    X = mesh.shape["expert"]
    if num_experts % X:
        raise sharding.ShardingError(f"mesh.expert={X} does not divide the model's num_experts={num_experts}")
    rows = sharding.batch_axes(mesh)
    N = x_ND.shape[0]
    pad = -N % sharding.num_batch_shards(mesh)
    if pad:  # rows whose choices (-1) no device takes
        x_ND = jnp.pad(x_ND, ((0, pad), (0, 0)))
        w_NK = jnp.pad(w_NK, ((0, pad), (0, 0)))
        idx_NK = jnp.pad(idx_NK, ((0, pad), (0, 0)), constant_values=-1)
    graphdef, state = nnx.split(experts)
    for leaf in jax.tree.leaves(state):
        assert leaf.shape[0] == num_experts, leaf.shape  # every expert weight is [E, ...]
    E_local = num_experts // X

    def body(state, x_nD, w_nK, idx_nK):
        x_MD = jax.lax.all_gather(x_nD, "expert", tiled=True)  # the expert group's tokens
        w_MK = jax.lax.all_gather(w_nK, "expert", tiled=True)
        e_MK = jax.lax.all_gather(idx_nK, "expert", tiled=True) - jax.lax.axis_index("expert") * E_local
        mine_MK = (e_MK >= 0) & (e_MK < E_local)
        e_MK = jnp.where(mine_MK, e_MK, 0)
        y_MD = local(nnx.merge(graphdef, state), x_MD, w_MK, e_MK, E_local, impl, mine_MK)
        return jax.lax.psum_scatter(y_MD, "expert", scatter_dimension=0, tiled=True)

    state_specs = jax.tree.map(lambda _: P("expert"), state)
    y_ND = jax.shard_map(
        body,
        mesh=mesh,
        in_specs=(state_specs, P(rows), P(rows), P(rows)),
        out_specs=P(rows),
    )(state, x_ND, w_NK, idx_NK)
    return y_ND[:N]
