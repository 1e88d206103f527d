"""Where a multi-process run's coordinator is and who this process is (a plain config; the
local backend hands it to `jaxcook.engine.distributed.initialize`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class DistributedConfig:
    """Where the coordinator is and who this process is; None = from the environment."""

    coordinator_address: str | None = None  # host:port of process 0
    num_processes: int | None = None
    process_id: int | None = None
