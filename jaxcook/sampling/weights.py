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

from jaxcook.models.config import ModelConfig

LAYERS = "layers"  # the Decoder attribute holding the stacked blocks


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
        return nnx.merge(self.model, weights.top, nnx.State({LAYERS: weights.layers[0]}))

    def block_at(self, weights: SamplerWeights, i: int):
        return nnx.merge(self.block, weights.layers[i])


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
