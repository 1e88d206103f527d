"""Several processes, one mesh: `jax.distributed.initialize` from the config or the environment,
process-local views of global arrays, and "process 0 only" for the shell's side effects.

    initialize(DistributedConfig())  # env: JAXCOOK_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID
                                     # (or JAX's own cluster detection: SLURM, TPU pods, ...)

After it, `jax.devices()` lists every process's devices and `engine.sharding.make_mesh` builds
the global mesh; every process runs the same program (multi-controller SPMD). Batches are
global arrays: each process builds and transfers only the rows its own devices hold
(`engine.process_batch`), and results come back to every host with `to_host` (an all-gather
where an array spans other processes; the trainer's and the sampler's outputs both use it).
Metrics, reports and progress bars are written by `is_main_process()` only. On CPU the
cross-process collectives are gloo's (`jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxcook.distributed_config import DistributedConfig

ENV = {
    "coordinator_address": "JAXCOOK_COORDINATOR",
    "num_processes": "JAXCOOK_NUM_PROCESSES",
    "process_id": "JAXCOOK_PROCESS_ID",
}


def resolve(config: DistributedConfig) -> dict:
    """The config's fields, each missing one read from its JAXCOOK_* variable (ints checked)."""
    out = {}
    for field, var in ENV.items():
        value = getattr(config, field)
        if value is None and os.environ.get(var):
            raw = os.environ[var]
            if field != "coordinator_address":
                try:
                    value = int(raw)
                except ValueError:
                    raise ValueError(f"{var}={raw!r}: expected an integer") from None
            else:
                value = raw
        out[field] = value
    return out


def initialize(config: DistributedConfig = DistributedConfig()) -> bool:
    """Join the process group if one is configured (config or env); returns whether this is a
    multi-process run. A single process with nothing configured is left alone."""
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = resolve(config)
    if all(v is None for v in args.values()):
        return False
    if args["num_processes"] == 1:
        return False
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)
    return jax.process_count() > 1


def is_main_process() -> bool:
    return jax.process_index() == 0


def place(x, sharding) -> jax.Array:
    """A host array (identical on every process) as a global array: each process copies only
    the slices its own devices hold."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
    """numpy values of a pytree of (possibly multi-process) arrays, identical on every process."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(one, tree)
