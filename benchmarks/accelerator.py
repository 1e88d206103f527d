"""Accelerator throughput on real model shapes with random weights: train-step MFU and decode speed
against the HBM bound.

    python -m benchmarks.accelerator --shapes llama-3.2-1b --batch 8 --seq 2048 [--peak-tflops 989]
                                     [--hbm-gbps 3350] [--decode-batch 32 --decode-new 128]

Train: one LoRA r32 step (forward + backward + AdamW) of batch x seq tokens, bf16 base, on every
local device (FSDP mesh); MFU = model FLOPs (`benchmarks.train_step.step_flops`) / time / peak.
Decode: `--decode-batch` prompts of 64 tokens, `--decode-new` greedy new tokens through the
jaxcook sampler; the HBM bound is the bytes one decode step must read (bf16 weights + the KV cache
at mid-generation) over `--hbm-gbps`. Defaults for the peaks are an H100 SXM's (989 bf16 TFLOP/s
dense, 3350 GB/s); pass your device's. `--shapes tiny` runs on a CPU in seconds (a smoke test of
this script, not a measurement). `benchmarks/gpu_suite.sh` runs the suite of the README.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.memory_plan import LLAMA_8B
from benchmarks.train_step import step_flops, time_steps
from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.sharding import MeshConfig, make_mesh
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.sampling.plan import SamplerBuckets
from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams

SHAPES = {
    "llama-3.2-1b": ModelConfig(
        model_type="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_layers=16,
        num_heads=32,
        num_kv_heads=8,
        head_dim=64,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
    "llama-3.1-8b": LLAMA_8B,
    "tiny": ModelConfig(
        model_type="llama",
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
    ),
}


def random_model(cfg: ModelConfig, lora, mesh):
    """Random bf16 weights created in their shardings (no device ever holds the whole model)."""
    from jaxcook.engine.sharding import state_shardings

    make = lambda: Decoder(cfg, lora=lora, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(params=0, lora=1))
    abstract = nnx.eval_shape(make)
    shardings = state_shardings(nnx.state(abstract), mesh)

    state = jax.jit(lambda: nnx.state(make()), out_shardings=shardings)()
    return nnx.merge(nnx.graphdef(abstract), state)


def train(cfg, mesh, batch: int, seq: int, iters: int, peak_tflops: float) -> None:
    lora = LoraConfig(rank=32)
    model = random_model(cfg, lora, mesh)
    buckets = BucketConfig(seq_buckets=(seq,), batch_buckets=(batch,))
    client = LocalTrainingClient(model, lora=lora, mesh=mesh, remat=True, buckets=buckets)
    rng = np.random.default_rng(0)
    data = []
    for _ in range(batch):
        tokens = rng.integers(0, cfg.vocab_size, seq + 1)
        inputs = {"target_tokens": tokens[1:], "weights": np.ones(seq, np.float32)}
        data.append(Datum(ModelInput.from_ints(tokens[:-1].tolist()), inputs))
    adam = AdamParams(learning_rate=1e-5)

    def step():
        client.forward_backward(data)
        client.optim_step(adam).result()

    seconds = time_steps(step, iters)
    flops = step_flops(cfg, batch * seq, seq, lora=True)
    mfu = flops / seconds / (peak_tflops * 1e12 * mesh.size)
    print(
        f"train  LoRA r32 {batch} x {seq}: {seconds:.3f} s/step, {batch * seq / seconds:,.0f} tokens/s,"
        f" MFU {100 * mfu:.1f}% of {peak_tflops:g} TFLOP/s x {mesh.size}"
    )
    client.close()


def decode(cfg, mesh, batch: int, new: int, hbm_gbps: float) -> None:
    model = random_model(cfg, None, mesh)
    sc = LocalSamplingClient.from_model(model, buckets=SamplerBuckets())
    rng = np.random.default_rng(0)
    prompts = [ModelInput.from_ints(rng.integers(0, cfg.vocab_size, 64).tolist()) for _ in range(batch)]
    params = SamplingParams(max_tokens=new, temperature=0.0, stop=[])
    sc.sample_many(prompts, 1, params).result()  # compile
    t = time.perf_counter()
    out = sc.sample_many(prompts, 1, params).result()
    seconds = time.perf_counter() - t
    generated = sum(len(r.sequences[0].tokens) for r in out)
    weight_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
    kv_bytes = 2 * cfg.num_layers * batch * (64 + new / 2) * cfg.num_kv_heads * cfg.head_dim * 2
    bound = hbm_gbps * 1e9 * mesh.size / (weight_bytes + kv_bytes) * batch  # tokens/s if HBM-bound
    print(
        f"decode {batch} x {new} new tokens: {generated / seconds:,.0f} tokens/s"
        f" (HBM bound {bound:,.0f} tokens/s at {hbm_gbps:g} GB/s x {mesh.size}:"
        f" {100 * generated / seconds / bound:.1f}%)"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", choices=sorted(SHAPES), default="llama-3.2-1b")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--decode-batch", type=int, default=32)
    p.add_argument("--decode-new", type=int, default=128)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--hbm-gbps", type=float, default=3350.0)
    args = p.parse_args(argv)
    cfg = SHAPES[args.shapes]
    mesh = make_mesh(MeshConfig(), devices=jax.local_devices())
    kind = jax.devices()[0].device_kind
    print(f"{args.shapes} on {mesh.size} x {kind} (jax {jax.__version__}), random weights")
    train(cfg, mesh, args.batch, args.seq, args.iters, args.peak_tflops)
    decode(cfg, mesh, args.decode_batch, args.decode_new, args.hbm_gbps)


if __name__ == "__main__":
    main()
