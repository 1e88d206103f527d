"""Train one step of a tiny LoRA model on a mesh, then sample from it on the same mesh; save the
tokens, log-probs and shardings (for test_sharding_sampler).

XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m tests.engine.sharded_sample OUT DATA FSDP TENSOR
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.engine import sharding
from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.sampling.decode import kv_constrain
from jaxcook.types import AdamParams, ModelInput, SamplingParams
from tests.engine.sharded_step import CONFIG, specs
from tests.engine.tiny import random_datums


def main(out: str, data: int, fsdp: int, tensor: int):
    lora = LoraConfig(rank=4)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    model = Decoder(CONFIG, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    tc = LocalTrainingClient(
        model, lora=lora, mesh=mesh, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    tc.forward_backward(random_datums(8, seed=0)).result()
    tc.optim_step(AdamParams(learning_rate=1e-2)).result()  # adapters now change the outputs
    sc = LocalSamplingClient.from_training_client(tc)
    prompts = [ModelInput.from_ints(p) for p in ([5, 6, 7], [9] * 11, [1, 2, 3, 4, 5, 6])]
    greedy = sc.sample_many(prompts, 2, SamplingParams(max_tokens=12, temperature=0.0, stop=[])).result()
    drawn = sc.sample_many(prompts, 3, SamplingParams(max_tokens=12, seed=7, stop=[]), True).result()
    arrays = {}
    for tag, responses in (("greedy", greedy), ("drawn", drawn)):
        for i, r in enumerate(responses):
            for j, seq in enumerate(r.sequences):
                arrays[f"{tag}{i}.{j}.tokens"] = np.asarray(seq.tokens)
                arrays[f"{tag}{i}.{j}.logprobs"] = np.asarray(seq.logprobs, np.float32)
            if r.prompt_logprobs is not None:
                arrays[f"{tag}{i}.prompt"] = np.asarray(r.prompt_logprobs[1:], np.float32)
    q_kernel = sc.weights.layers[0]["self_attn"]["q_proj"]["kernel"][...]
    info = {
        "graph_mesh": None if sc.graph.mesh is None else dict(sc.graph.mesh.shape),
        "same_devices": sorted(d.id for d in q_kernel.devices()) == sorted(d.id for d in mesh.devices.flat),
    }
    if sc.graph.mesh is not None:
        with sharding.activation_mesh(sc.graph.mesh):
            cache = jax.jit(lambda: kv_constrain(jnp.zeros((4, 16, CONFIG.num_kv_heads, CONFIG.head_dim))))()
        info["cache"] = [str(cache.sharding.spec), list(cache.addressable_shards[0].data.shape)]
        info["layer0"] = specs(sc.weights.layers[0])
        info["top"] = specs(sc.weights.top)
    np.savez(out, info=json.dumps(info), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
