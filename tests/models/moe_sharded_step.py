"""Two train steps of a tiny Qwen3-MoE on a mesh; saves losses, params and the expert kernels'
shardings (for test_moe_sharding).

XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.models.moe_sharded_step OUT DATA FSDP MODE
"""

import json
import sys

import jax
import numpy as np
from flax import nnx

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.config import ModelConfig, MoeConfig
from jaxcook.models.decoder import Decoder
from jaxcook.types import AdamParams
from tests.engine.tiny import random_datums

MOE = ModelConfig(
    model_type="qwen3_moe",
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qk_norm=True,
    moe=MoeConfig(num_experts=8, top_k=2, intermediate_size=16, norm_topk_prob=True, aux_loss_coef=0.01),
)


def main(out: str, data: int, fsdp: int, mode: str):
    lora = None if mode == "full" else LoraConfig(rank=4)
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp))
    model = Decoder(MOE, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    client = LocalTrainingClient(
        model, lora=lora, mesh=mesh, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    losses = []
    for step in range(2):
        out_fb = client.forward_backward(random_datums(8, seed=step)).result()
        client.optim_step(AdamParams(learning_rate=1e-2)).result()
        losses.append(out_fb.metrics["loss:sum"])
    state = client.current_state().result()
    flat = jax.tree_util.tree_leaves_with_path(state.params)
    leaves = {jax.tree_util.keystr(k): np.asarray(v) for k, v in flat}
    frozen = jax.tree_util.tree_leaves_with_path(client.frozen)
    specs = {
        jax.tree_util.keystr(k): str(v.sharding.spec)
        for k, v in flat + frozen
        if "experts" in jax.tree_util.keystr(k)
    }
    np.savez(
        out, losses=np.asarray(losses), devices=len(mesh.devices.flat), specs=json.dumps(specs), **leaves
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
