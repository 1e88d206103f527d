"""Train a tiny LoRA model on a 2 x 2 (data x fsdp) mesh spread over one or two processes: two
steps, save, a third step; then a fresh client restores the checkpoint and takes the third step
again; then the trained weights sample on the mesh (greedy and with a fixed seed). Every process
saves what it saw to OUT-{process}.npz (for test_multihost): the losses, the rows of each host
batch it built, the samples; and it logs metrics / a report under LOGS-{process} (process 0 only
should write anything).

JAXCOOK_COORDINATOR=127.0.0.1:PORT JAXCOOK_NUM_PROCESSES=2 JAXCOOK_PROCESS_ID=I \
XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m tests.engine.multihost_step OUT CKPT LOGS
"""

import sys

import jax
import numpy as np
from flax import nnx

from jaxcook.engine import distributed, training_client
from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.logging.html_report import write_rollout_report
from jaxcook.logging.run_dir import setup_logging
from jaxcook.lora import LoraConfig
from jaxcook.models.decoder import Decoder
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.types import AdamParams, ModelInput, SamplingParams
from tests.engine.sharded_step import CONFIG
from tests.engine.tiny import random_datums

HOST_ROWS: list[tuple[int, int]] = []  # (rows built on this host, global rows) per batch


def _recording(make):
    def wrapped(*args, **kwargs):
        batch, layout, host = make(*args, **kwargs)
        assert batch.tokens_BT.shape[0] == layout.batch_size  # the global array
        HOST_ROWS.append((int(host.tokens_BT.shape[0]), layout.batch_size))
        return batch, layout, host

    return wrapped


training_client.make_process_batch = _recording(training_client.make_process_batch)


def client(mesh):
    lora = LoraConfig(rank=4)
    model = Decoder(CONFIG, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    buckets = BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    return LocalTrainingClient(model, lora=lora, mesh=mesh, buckets=buckets)


def step(tc, seed):
    out = tc.forward_backward(random_datums(8, seed=seed)).result()
    tc.optim_step(AdamParams(learning_rate=1e-2)).result()
    return out.metrics["loss:sum"], np.concatenate([x["logprobs"] for x in out.loss_fn_outputs])


def samples(tc) -> dict[str, np.ndarray]:
    sc = LocalSamplingClient.from_training_client(tc)
    prompts = [ModelInput.from_ints(p) for p in ([5, 6, 7], [9] * 11, [1, 2, 3, 4, 5, 6])]
    # one decode program: prompt 0 greedy, the others drawn with a fixed seed
    greedy = SamplingParams(max_tokens=8, temperature=0.0, stop=[])
    drawn = SamplingParams(max_tokens=8, seed=7, stop=[])
    responses = sc.sample_many(prompts, 2, [greedy, drawn, drawn], True).result()
    arrays = {}
    for i, r in enumerate(responses):
        for j, seq in enumerate(r.sequences):
            arrays[f"sample{i}.{j}.tokens"] = np.asarray(seq.tokens)
            arrays[f"sample{i}.{j}.logprobs"] = np.asarray(seq.logprobs, np.float32)
        arrays[f"sample{i}.prompt"] = np.asarray(r.prompt_logprobs[1:], np.float32)
    sc.close()
    return arrays


def main(out: str, ckpt: str, logs: str):
    multi = distributed.initialize()
    me = jax.process_index()
    mesh = make_mesh(MeshConfig(data=2, fsdp=2))
    assert mesh.size == 4 and jax.local_device_count() == (2 if multi else 4)
    logger = setup_logging(f"{logs}-{me}", {"process": me}, tensorboard=False)
    tc = client(mesh)
    losses, logprobs = [], []
    for seed in range(2):
        loss, lp = step(tc, seed)
        losses.append(loss)
        logprobs.append(lp)
        logger.log_metrics({"train/loss": loss}, step=seed)
    logger.close()
    rollout = {"messages": [{"role": "user", "content": "hi"}], "reward": 1.0}
    write_rollout_report(f"{logs}-{me}", 0, [rollout])
    tc.save_state(ckpt).result()
    third, _ = step(tc, 2)
    drawn = samples(tc)
    tc.close()
    resumed = client(mesh)
    resumed.load_state(ckpt).result()
    third_resumed, _ = step(resumed, 2)
    resumed.close()
    np.savez(
        f"{out}-{me}.npz",
        losses=np.asarray(losses + [third]),
        resumed=third_resumed,
        logprobs=np.concatenate(logprobs),
        processes=jax.process_count(),
        host_rows=np.asarray(HOST_ROWS),
        **drawn,
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
