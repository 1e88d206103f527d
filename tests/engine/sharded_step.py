"""Run two train steps of a tiny model on a mesh; save losses, params and every sharding (for
test_sharding).

XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m tests.engine.sharded_step OUT DATA FSDP TENSOR MODE
"""

import dataclasses
import json
import sys

import jax
import numpy as np

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from jaxcook.types import AdamParams
from tests.engine.tiny import TINY, random_datums

# TINY with a vocabulary that splits over `tensor` (its 97 does not); tokens stay below 97.
CONFIG = dataclasses.replace(TINY, vocab_size=128)


def specs(tree) -> dict[str, list]:
    """keystr -> [partition spec as strings, shape of device 0's shard, #addressable shards]."""
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        spec = [None if a is None else (list(a) if isinstance(a, tuple) else a) for a in x.sharding.spec]
        shard = x.addressable_shards[0].data.shape
        out[jax.tree_util.keystr(path)] = [spec, list(shard), len(x.addressable_shards)]
    return out


def main(out: str, data: int, fsdp: int, tensor: int, mode: str):
    from flax import nnx

    lora = None if mode == "full" else LoraConfig(rank=4)
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    # "tied": SmolLM2-style tied embeddings, the unembedding adapter has no kernel of its own
    cfg = dataclasses.replace(CONFIG, tie_word_embeddings=True) if mode == "tied" else CONFIG
    model = Decoder(cfg, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    client = LocalTrainingClient(
        model, lora=lora, mesh=mesh, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    batch, _ = client._batch(random_datums(8, seed=0))
    losses = []
    for step in range(2):
        out_fb = client.forward_backward(random_datums(8, seed=step)).result()
        client.optim_step(AdamParams(learning_rate=1e-2)).result()
        losses.append(out_fb.metrics["loss:sum"])
    state = client.current_state().result()
    leaves = {
        jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(state.params)
    }
    shardings = {
        "params": specs(state.params),
        "mu": specs(state.opt_state.mu),
        "nu": specs(state.opt_state.nu),
        "grad_accum": specs(state.grad_accum),
        "frozen": specs(client.frozen),
        "batch": specs(batch),
    }
    np.savez(out, losses=np.asarray(losses), devices=mesh.size, shardings=json.dumps(shardings), **leaves)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
