"""Device mesh and shardings: logical axis names -> mesh axes (`data`, `fsdp`, `expert`, `tensor`).

Every parameter carries logical axis names (`models/layers.py`); `RULES` maps them onto the
mesh. Together they give, per weight:

- attention: q/k/v kernels [embed, heads|kv_heads] are column-parallel (output over `tensor`),
  o [heads, embed] row-parallel (input over `tensor`); MLP gate/up [embed, mlp] column, down
  [mlp, embed] row; the embedding [vocab, embed] and the head [embed, vocab] vocabulary-parallel;
- every `embed` axis over `fsdp` (ZeRO-3 style: XLA all-gathers a weight for its matmul);
- LoRA `lora_a` [in, r] / `lora_b` [r, out] take the in / out axis of their base kernel, so an
  adapter is split exactly like the kernel it corrects; the rank axis is replicated;
- a mixture-of-experts' expert weights [E, in, out] (and their adapters) split their `expert`
  axis over `expert` (`models/expert_parallel.py` sends the tokens to them).

Batches are split along their leading axis over `data` x `fsdp` x `expert` (`batch_axes`;
`expert` only when it is larger than 1, so other meshes keep their `data` x `fsdp` specs);
`tensor` devices see the same rows. Outside the experts, `expert` is data parallelism: every
other weight is replicated over it, and a dense model on `mesh.expert > 1` is simply
data-parallel over it. A parameter dimension that does not divide its mesh axis is an error naming the
parameter, its shape and the axis (never a silent replication). Activations are constrained
inside jit with `constrain` while `activation_mesh(mesh)` is active (a trace-time context the
jitted steps enter); an activation dimension that does not divide is split unevenly (XLA pads),
which only costs memory balance, never numerics. On one device every sharding is trivial: the
same code runs everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcook.mesh_config import MESH_AXES, MeshConfig, ShardingError  # noqa: F401 - re-exported

BATCH_AXES = ("data", "fsdp")  # plus `expert` on a mesh where it is > 1 (`batch_axes`)

# logical axis -> mesh axis (None = replicated). Parameters and activations share the table;
# `batch` names only activations, and activations leave `embed` unsharded (see `constrain`).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "layers": None,
    "embed": "fsdp",
    "vocab": "tensor",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "expert": "expert",
    "batch": BATCH_AXES,
}


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    """The (`data`, `fsdp`, `expert`, `tensor`) mesh over `devices` (default: every device of
    every process; `tensor` is the fastest-varying axis, then `expert`, so tensor and expert
    groups are neighbouring devices)."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(np.asarray(devices).reshape(config.sizes(len(devices))), MESH_AXES)


def _axis_size(mesh: Mesh, axis) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[a] for a in names]))


def _live(axis, mesh: Mesh):
    """`axis` without its size-1 mesh axes (a 1-way split is no split); None if nothing is left."""
    names = tuple(a for a in (axis if isinstance(axis, tuple) else (axis,)) if mesh.shape[a] > 1)
    return None if not names else names[0] if len(names) == 1 else names


def param_spec(logical, shape, mesh: Mesh, *, where: str = "parameter") -> P:
    """The PartitionSpec of a parameter of `shape` with logical axis names `logical`; an axis
    that does not divide its mesh axis raises `ShardingError`.

    ZeRO fallback: a parameter none of whose axes is over `fsdp` (a LoRA factor of a row- or
    column-parallel layer, e.g. `lora_a` [mlp, r] of `down_proj`, or a bias) also splits its
    first named axis over `fsdp` when that divides; XLA gathers it for the matmul, and its
    optimizer state is split like it. Without it a 70B model's adapters and Adam moments would
    sit whole on every device (see `benchmarks/memory_plan.py`). An `expert` axis already split
    over `expert` is skipped (the next named axis takes `fsdp`): every device holds whole experts.
    """
    logical = tuple(logical or ()) + (None,) * (len(shape) - len(tuple(logical or ())))
    axes = []
    for dim, (name, size) in enumerate(zip(logical, shape, strict=True)):
        axis = _live(RULES.get(name), mesh) if name is not None and RULES.get(name) else None
        if axis is not None and size % _axis_size(mesh, axis):
            raise ShardingError(
                f"{where}: shape {tuple(shape)} axis {dim} ({name}={size}) does not divide over "
                f"mesh axis {axis!r} of size {_axis_size(mesh, axis)}; choose mesh sizes that divide it"
            )
        axes.append(axis)
    used = {a for axis in axes if axis for a in (axis if isinstance(axis, tuple) else (axis,))}
    if mesh.shape["fsdp"] > 1 and "fsdp" not in used:
        for dim, name in enumerate(logical):
            if name is None or name == "layers" or (name == "expert" and axes[dim] is not None):
                continue  # an expert-parallel weight keeps E / expert whole experts per device
            extended = _live(
                ((axes[dim],) if isinstance(axes[dim], str) else axes[dim] or ()) + ("fsdp",), mesh
            )
            if shape[dim] % _axis_size(mesh, extended) == 0:
                axes[dim] = extended
            break
    return P(*axes)


def state_shardings(state, mesh: Mesh):
    """NamedShardings for an nnx.State (or a pytree of them) from their logical axis names."""
    specs = nnx.get_partition_spec(state)

    def one(path, spec, value):
        where = jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value")
        return NamedSharding(mesh, param_spec(spec, value.shape, mesh, where=where))

    return jax.tree_util.tree_map_with_path(one, specs, state, is_leaf=lambda x: isinstance(x, P))


def pin(state, mesh: Mesh | None):
    """Inside jit: constrain an nnx.State (or pytree of them) to its `state_shardings`, so a
    step's outputs keep their inputs' layout (a fresh `zeros_like` would come out replicated)."""
    if mesh is None or mesh.size == 1:
        return state
    return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh))


def check_model(config, mesh: Mesh) -> None:
    """The attention heads must split whole over `tensor` (a kernel's heads x head_dim axis could
    divide while a head would not, which would scatter one head over several devices), and a
    mixture-of-experts' experts over `expert`."""
    t = mesh.shape["tensor"]
    for name in ("num_heads", "num_kv_heads"):
        heads = getattr(config, name)
        if heads % t:
            raise ShardingError(f"model {name}={heads} does not divide over mesh axis 'tensor' of size {t}")
    x, moe = mesh.shape["expert"], getattr(config, "moe", None)
    if moe is not None and moe.num_experts % x:
        raise ShardingError(
            f"mesh.expert={x} does not divide the model's num_experts={moe.num_experts}; "
            "choose a mesh.expert that divides it"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
    """The mesh axes the rows of a batch split over: `data`, `fsdp` (and `expert` when > 1)."""
    return BATCH_AXES + (("expert",) if mesh.shape.get("expert", 1) > 1 else ())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `batch_axes` (replicated over `tensor`)."""
    return NamedSharding(mesh, P(batch_axes(mesh)))


def num_batch_shards(mesh: Mesh) -> int:
    return _axis_size(mesh, batch_axes(mesh))


# -- activation constraints (trace time) ----------------------------------------------------------

_ACTIVE: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("jaxcook_activation_mesh", default=None)


@contextlib.contextmanager
def activation_mesh(mesh: Mesh | None):
    """While tracing under this context, `constrain` pins activations onto `mesh`."""
    token = _ACTIVE.set(mesh)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_mesh() -> Mesh | None:
    """The mesh of the enclosing `activation_mesh` (None outside one)."""
    return _ACTIVE.get()


def activation_spec(names: tuple[str | None, ...], mesh: Mesh) -> P:
    """Activations: `batch` over `batch_axes`; `heads`, `kv_heads`, `mlp`, `vocab` as in RULES;
    `embed` replicated."""
    batch = batch_axes(mesh)
    return P(*(None if n in (None, "embed") else batch if n == "batch" else RULES[n] for n in names))


def constrain(x, names: tuple[str | None, ...]):
    """`with_sharding_constraint` of `x` by logical names, or `x` itself outside a mesh context."""
    mesh = _ACTIVE.get()
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, activation_spec(names, mesh)))
