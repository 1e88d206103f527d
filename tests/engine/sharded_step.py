"""Run two train steps of the tiny model on a mesh and save loss + params (for test_sharding).

XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.engine.sharded_step OUT DATA FSDP
"""

import sys

import jax
import numpy as np

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.types import AdamParams
from tests.engine.tiny import random_datums, tiny_model


def main(out: str, data: int, fsdp: int, full: bool):
    lora = None if full else LoraConfig(rank=4)
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp))
    client = LocalTrainingClient(
        tiny_model(lora), lora=lora, mesh=mesh, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    losses = []
    for step in range(2):
        out_fb = client.forward_backward(random_datums(8, seed=step)).result()
        client.optim_step(AdamParams(learning_rate=1e-2)).result()
        losses.append(out_fb.metrics["loss:sum"])
    state = client.current_state().result()
    leaves = {
        jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state.params)
    }
    np.savez(out, losses=np.asarray(losses), devices=len(mesh.devices.flat), **leaves)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "full")
