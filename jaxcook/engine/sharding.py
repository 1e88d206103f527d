"""Device mesh and shardings: logical axis names on parameters -> mesh axes (`data`, `fsdp`).

Parameters are sharded along their `embed` axis over `fsdp` (ZeRO-3 style: XLA all-gathers
them for the matmuls); batches are split along the batch axis over `data` x `fsdp`. On one
device the mesh is 1 x 1 and every sharding is trivial: the same code runs everywhere.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcook.mesh_config import MeshConfig  # noqa: F401 - re-exported: it configures make_mesh

# logical axis -> mesh axis (None = replicated)
RULES: dict[str, str | None] = {
    "layers": None,
    "embed": "fsdp",
    "vocab": None,
    "mlp": None,
    "heads": None,
    "kv_heads": None,
}
BATCH_AXES = ("data", "fsdp")


def make_mesh(config: MeshConfig = MeshConfig(), devices=None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    data, fsdp = config.data, config.fsdp
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of data/fsdp may be -1")
    if fsdp == -1:
        fsdp = len(devices) // data
    if data == -1:
        data = len(devices) // fsdp
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={data} x fsdp={fsdp} does not match {len(devices)} devices")
    return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def _mesh_spec(logical: P, shape, mesh: Mesh) -> P:
    axes = []
    for name, dim in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape, strict=True):
        axis = RULES.get(name) if name is not None else None
        # an axis that does not divide evenly stays replicated (correct, just less sharded)
        axes.append(axis if axis is not None and dim % mesh.shape[axis] == 0 else None)
    return P(*axes)


def state_shardings(state, mesh: Mesh):
    """NamedShardings for an nnx.State (or a pytree of them) from their logical axis names."""
    specs = nnx.get_partition_spec(state)

    def one(spec, value):
        return NamedSharding(mesh, _mesh_spec(spec, value.shape, mesh))

    return jax.tree.map(one, specs, state, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
