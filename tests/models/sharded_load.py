"""Load a small safetensors model straight onto a mesh of fake CPU devices; report per-device
bytes, the host-memory peak (tracemalloc) and the loaded values (for test_sharded_load).

XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    python -m tests.models.sharded_load FOLDER OUT FSDP TENSOR SOURCE
"""

import json
import sys
import tracemalloc

import jax
import numpy as np
from flax import nnx

from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.models.config import ModelConfig
from jaxcook.models.params import load_state_from_source
from jaxcook.models.safetensors_source import SafetensorsSource


class WholeTensors:
    """A source without `get_slice` (like GGUF, whose quantised blocks span rows)."""

    def __init__(self, inner):
        self.inner, self.folder = inner, inner.folder

    def names(self):
        return self.inner.names()

    def shape(self, name):
        return self.inner.shape(name)

    def get(self, name):
        return self.inner.get(name)


def main(folder: str, out: str, fsdp: int, tensor: int, kind: str):
    mesh = make_mesh(MeshConfig(fsdp=fsdp, tensor=tensor))
    if kind == "gguf":  # `folder` is a .gguf file
        from jaxcook.models.gguf_source import GGUFSource

        source = GGUFSource(folder)
        cfg = ModelConfig.from_hf(source.hf_config(), source=folder)
    else:
        cfg = ModelConfig.from_file(f"{folder}/config.json")
        source = SafetensorsSource(folder)
    if kind == "whole":
        source = WholeTensors(source)
    load_state_from_source(cfg, source, mesh=mesh)  # warm-up: lazy imports, tracing caches
    tracemalloc.start()
    model = load_state_from_source(cfg, source, mesh=mesh)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    state = nnx.state(model)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    per_device = {d.id: 0 for d in mesh.devices.flat}
    for _, x in leaves:
        for shard in x.addressable_shards:
            per_device[shard.device.id] += shard.data.nbytes
    values = {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}
    specs = {jax.tree_util.keystr(k): str(v.sharding.spec) for k, v in leaves}
    np.savez(
        out,
        peak=peak,
        total=sum(x.nbytes for _, x in leaves),
        largest=max(x.nbytes for _, x in leaves),
        per_device=np.asarray(list(per_device.values())),
        specs=json.dumps(specs),
        **values,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
