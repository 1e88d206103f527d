"""How the devices are laid out: the config of a device mesh (built by `jaxcook.engine.sharding`).

A plain config with no JAX in it, so recipes and workflows can carry it as a backend option.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class MeshConfig:
    """`data` x `fsdp` devices; -1 takes the remaining devices."""

    data: int = 1
    fsdp: int = -1
