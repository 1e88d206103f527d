"""How the devices are laid out: the config of a device mesh (built by `jaxcook.engine.sharding`).

A plain config with no JAX in it, so recipes and workflows can carry it as a backend option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# `expert` sits beside `tensor` (the fastest axis): expert groups are neighbouring devices
MESH_AXES = ("data", "fsdp", "expert", "tensor")


class ShardingError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """`data` x `fsdp` x `expert` x `tensor` devices; at most one may be -1 (the remaining devices).

    `expert` splits a mixture-of-experts model's experts (and their adapters and optimizer
    state) over that many devices; outside the experts it is more data parallelism (the batch
    is split over `data` x `fsdp` x `expert`), which is also all it is for a dense model.
    """

    data: int = 1
    fsdp: int = -1
    expert: int = 1
    tensor: int = 1

    def sizes(self, n_devices: int) -> tuple[int, int, int, int]:
        sizes = [self.data, self.fsdp, self.expert, self.tensor]
        for name, size in zip(MESH_AXES, sizes):
            if size == 0 or size < -1:
                raise ShardingError(f"mesh.{name} must be a positive device count or -1, got {size}")
        free = [i for i, s in enumerate(sizes) if s == -1]
        if len(free) > 1:
            raise ShardingError(f"mesh: at most one of data/fsdp/expert/tensor may be -1, got {self}")
        if free:
            rest = math.prod(s for s in sizes if s != -1)
            if n_devices % rest:
                raise ShardingError(f"mesh {self}: {n_devices} devices do not split into groups of {rest}")
            sizes[free[0]] = n_devices // rest
        if math.prod(sizes) != n_devices:
            data, fsdp, expert, tensor = sizes
            raise ShardingError(
                f"mesh data={data} x fsdp={fsdp} x expert={expert} x tensor={tensor} "
                f"does not match {n_devices} devices"
            )
        return tuple(sizes)
