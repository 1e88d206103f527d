"""Train a tiny LoRA model on a 2 x 2 (data x fsdp) mesh spread over one or two processes: two
steps, save, a third step; then a fresh client restores the checkpoint and takes the third step
again. Process 0 saves the losses (for test_multihost).

JAXCOOK_COORDINATOR=127.0.0.1:PORT JAXCOOK_NUM_PROCESSES=2 JAXCOOK_PROCESS_ID=I \
XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m tests.engine.multihost_step OUT CKPT
"""

import sys

import jax
import numpy as np
from flax import nnx

from jaxcook.engine import distributed
from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from jaxcook.types import AdamParams
from tests.engine.sharded_step import CONFIG
from tests.engine.tiny import random_datums


def client(mesh):
    lora = LoraConfig(rank=4)
    model = Decoder(CONFIG, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    buckets = BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    return LocalTrainingClient(model, lora=lora, mesh=mesh, buckets=buckets)


def step(tc, seed):
    out = tc.forward_backward(random_datums(8, seed=seed)).result()
    tc.optim_step(AdamParams(learning_rate=1e-2)).result()
    return out.metrics["loss:sum"], np.concatenate([x["logprobs"] for x in out.loss_fn_outputs])


def main(out: str, ckpt: str):
    multi = distributed.initialize()
    mesh = make_mesh(MeshConfig(data=2, fsdp=2))
    assert mesh.size == 4 and jax.local_device_count() == (2 if multi else 4)
    tc = client(mesh)
    losses, logprobs = [], []
    for seed in range(2):
        loss, lp = step(tc, seed)
        losses.append(loss)
        logprobs.append(lp)
    tc.save_state(ckpt).result()
    third, _ = step(tc, 2)
    resumed = client(mesh)
    resumed.load_state(ckpt).result()
    third_resumed, _ = step(resumed, 2)
    if distributed.is_main_process():
        np.savez(
            out,
            losses=np.asarray(losses + [third]),
            resumed=third_resumed,
            logprobs=np.concatenate(logprobs),
            processes=jax.process_count(),
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
