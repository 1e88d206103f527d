"""Sampler weights: a model's parameters laid out for the decode loop, one state per layer.

The decoder stores layer parameters stacked ([L, in, out]) and applies them with `lax.scan`.
Inside a decode `while_loop` on CPU, every scan iteration copies its layer's weights out of
the stack (a dynamic slice is a new buffer), which triples the memory traffic of a step that
is bound by weight reads. The sampler therefore keeps each layer's weights as separate arrays
and applies the layers one after another (unrolled), so a step reads every weight once.

`SamplerWeights` is that layout (a plain pytree: it crosses `jit`); `SamplerGraph` holds the
static structure (graphdefs, config) needed to rebuild the modules inside `jit`. Unstacking
copies the layer weights once; for a training client the frozen base is unstacked once and
shared by every snapshot, so a snapshot costs a copy of the trainable parameters only.

bf16 products (`set_matmul_dtype(model, "bfloat16")`). A decode step reads every weight once
and is bound by those reads, so `bf16_kernels` rounds the kernels of bf16-product layers to bf16
once per decode call (inside its jit, before the loop), not at every step, and gives a tied
model a bf16 [D, V] copy of its table for the unembedding (`top[UNEMBED]`): XLA's bf16 dot reads
a transposed [V, D] table ~8x slower. The products take the same bf16 operands as the model's.
Measured (SmolLM2, 8 rows, 2 AVX512-BF16 cores, load ~9): a bf16 decode step 732 -> 58 ms.

On a mesh (weights that are `NamedSharding`s over more than one device, e.g. the training
client's), every layer keeps its stacked layout minus the `layers` axis: each device copies
its own slices, nothing is gathered. `SamplerGraph.mesh` is that mesh; decode pins its
activations and KV cache onto it (`engine.sharding.constrain`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcook.kernels import cpu_gemm
from jaxcook.models.config import ModelConfig
from jaxcook.models.layers import Embed, Linear, constrain_out

LAYERS = "layers"  # the Decoder attribute holding the stacked blocks
UNEMBED = "unembed_DV"  # top entry inside decode: a tied model's table as bf16 [D, V]


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class SamplerWeights:
    top: nnx.State  # every variable outside the layer stack: embedding, final norm, head (+ adapters)
    layers: tuple[nnx.State, ...]  # layer i's variables (paths relative to the block), unstacked


@dataclass(frozen=True)
class SamplerGraph:
    """Static structure: rebuilds the decoder shell and one block from `SamplerWeights`."""

    model: nnx.GraphDef  # the whole Decoder
    block: nnx.GraphDef  # the layer stack (a vmapped Block), merged with one layer's arrays
    config: ModelConfig
    mesh: Mesh | None = None  # the weights' mesh when they span several devices

    def shell(self, weights: SamplerWeights):
        """The Decoder for its embedding, final norm and unembedding (its `layers` slot holds
        layer 0's arrays and is never applied)."""
        top = nnx.State({k: v for k, v in weights.top.items() if k != UNEMBED})
        return nnx.merge(self.model, top, nnx.State({LAYERS: weights.layers[0]}))

    def unembed(self, weights: SamplerWeights, h):
        """Logits [..., V] in float32, as `Decoder.unembed` (with `top[UNEMBED]`: from it)."""
        shell = self.shell(weights)
        if UNEMBED not in weights.top:
            return shell.unembed(h)
        logits = constrain_out(cpu_gemm.dot(h, weights.top[UNEMBED]), "vocab")
        if shell.lm_head_lora is not None:
            logits = logits + shell.lm_head_lora(h)
        return logits.astype(jnp.float32)

    def block_at(self, weights: SamplerWeights, i: int):
        return nnx.merge(self.block, weights.layers[i])


def _cast_bf16_kernels(module) -> None:
    """Round (in place) the kernel of every Linear with `bf16_matmul` to bfloat16."""
    for path, m in nnx.iter_modules(module):
        if isinstance(m, Linear) and m.bf16_matmul and LAYERS not in path[:1]:
            m.kernel.value = m.kernel.value.astype(jnp.bfloat16)


def bf16_kernels(graph: SamplerGraph, weights: SamplerWeights) -> SamplerWeights:
    """`weights` with the kernels of bf16-product layers rounded to bf16 and, for a tied model
    with a bf16 unembedding, `top[UNEMBED]` (module doc). Those kernels only ever enter products
    with bf16 operands, so the numbers are unchanged."""
    shell = graph.shell(weights)
    if not any(isinstance(m, Linear | Embed) and m.bf16_matmul for _, m in nnx.iter_modules(shell)):
        return weights
    _cast_bf16_kernels(shell)
    top = nnx.State({k: v for k, v in nnx.state(shell).items() if k != LAYERS})
    if shell.lm_head is None and shell.embed_tokens.bf16_matmul:
        table_DV = shell.embed_tokens.embedding.value.T.astype(jnp.bfloat16)
        top = nnx.State({**top, UNEMBED: table_DV})
    layers = []
    for i in range(len(weights.layers)):
        block = graph.block_at(weights, i)
        _cast_bf16_kernels(block)
        layers.append(nnx.state(block))
    return SamplerWeights(top, tuple(layers))


def split_top(state: nnx.State) -> tuple[nnx.State, nnx.State | None]:
    """(everything but the layer stack, the stacked layer subtree or None)."""
    top = nnx.State({k: v for k, v in state.items() if k != LAYERS})
    return top, state[LAYERS] if LAYERS in state else None


def _unstack_fn(stacked: nnx.State, num_layers: int) -> tuple[nnx.State, ...]:
    return tuple(jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers))


_unstack = jax.jit(_unstack_fn, static_argnums=1)


def mesh_of(*states) -> Mesh | None:
    """The mesh of the first array that is sharded over more than one device (None if none)."""
    for x in jax.tree.leaves(states):
        s = getattr(x, "sharding", None)
        if isinstance(s, NamedSharding) and s.mesh.size > 1:
            return s.mesh
    return None


def unstack_layers(stacked: nnx.State | None, num_layers: int) -> tuple[nnx.State, ...]:
    """Per-layer copies of a stacked layer subtree ([L, ...] leaves -> L states of [...]); on a
    mesh each layer keeps its stacked sharding minus the leading `layers` axis. `num_layers` is
    the stack's length (`ModelConfig.stacked_layers`: a dense prefix stays in `top`)."""
    if stacked is None or not jax.tree.leaves(stacked):
        return tuple(nnx.State({}) for _ in range(num_layers))
    if jax.tree.leaves(stacked)[0].shape[0] != num_layers:
        raise ValueError(f"a stack of {jax.tree.leaves(stacked)[0].shape[0]} layers, not {num_layers}")
    if mesh_of(stacked) is None:
        return _unstack(stacked, num_layers)

    def layer_sharding(x):
        return NamedSharding(x.sharding.mesh, P(*tuple(x.sharding.spec)[1:]))

    out = jax.tree.map(layer_sharding, stacked)
    return jax.jit(_unstack_fn, static_argnums=1, out_shardings=(out,) * num_layers)(stacked, num_layers)


def merge_parts(*parts: tuple[nnx.State, tuple[nnx.State, ...]]) -> SamplerWeights:
    """Combine (top, layers) parts with disjoint variables (e.g. frozen base + trainable)."""
    tops = [top for top, _ in parts]
    layers = zip(*(layers for _, layers in parts), strict=True)
    return SamplerWeights(nnx.State.merge(*tops), tuple(nnx.State.merge(*ls) for ls in layers))


def part_of(state: nnx.State, num_layers: int) -> tuple[nnx.State, tuple[nnx.State, ...]]:
    """(top, unstacked layers) of one state (all the model's variables, or a subset)."""
    top, stacked = split_top(state)
    return top, unstack_layers(stacked, num_layers)


def graph_of(graphdef: nnx.GraphDef, *states: nnx.State) -> SamplerGraph:
    """The static structure of the model described by `graphdef` and its states."""
    model = nnx.merge(graphdef, *states)  # references the arrays; nothing is copied
    graph = nnx.graphdef(model), nnx.graphdef(getattr(model, LAYERS)), model.config
    return SamplerGraph(*graph, mesh=mesh_of(*states))


def zero_adapters(state: nnx.State) -> nnx.State:
    """`state` with every LoRA `lora_b` replaced by zeros (other leaves shared, not copied): the
    base model with the adapters off (the reference policy of KL penalties and DPO)."""

    def off(path, x):
        names = {getattr(p, "key", getattr(p, "name", None)) for p in path}
        return jnp.zeros_like(x) if "lora_b" in names else x

    return jax.tree_util.tree_map_with_path(off, state)
