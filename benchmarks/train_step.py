"""Training-step throughput: jaxcook vs PyTorch (transformers + peft), same model, batch and LoRA layers.

    python -m benchmarks.train_step [--batch 8] [--seq 256] [--iters 3] [--models smollm2,tiny20m]
                                    [--modes lora,full] [--rank 8] [--no-peer] [--random-weights]
                                    [--dtype float32|bfloat16] [--matmul-dtype float32|bfloat16]

For each model (SmolLM2-135M-Instruct, and a ~20M-parameter Llama config with the same vocab)
and each mode (LoRA r8 on every attention and MLP projection; full fine-tuning) it times one
optimizer step (forward + backward + AdamW) of batch x seq tokens in f32, and prints tokens/s,
the fraction of this machine's measured matmul peak, and the ratio jaxcook / PyTorch.
`--no-peer --random-weights` times jaxcook alone on SmolLM2-135M's architecture with random
weights, for a machine without torch or the model file (a GPU host, say).
`--matmul-dtype bfloat16` runs every projection with bf16 operands and f32 accumulation on both
sides: jaxcook through `model.matmul_dtype=bfloat16` (oneMKL on AMX on CPU), PyTorch under
`torch.autocast("cpu", torch.bfloat16)` (oneDNN on AMX); weights, adapters, optimizer state and
the loss stay f32. That is each side's best setting on an AMX machine; f32 vs f32 is the default.
`--dtype bfloat16` loads the base weights in bf16 on both sides (`param_dtype` / `model.to`), so
the activations between the matmuls are bf16 too; adapters and their optimizer state stay f32
(PEFT computes its adapter products in f32, jaxcook in the activations' dtype), the loss f32.

FLOPs per step use the usual estimates: full fine-tuning 6 N T, LoRA 4 N T (no weight gradients
for the frozen base), N = non-embedding parameters + the unembedding, T = tokens, plus attention
(12 L T S D for a full step, 8 L T S D with LoRA; S = seq).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.machine import describe, jax_peaks
from benchmarks.peers import TARGET_MODULES, torch_smollm2
from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models import ModelConfig, load
from jaxcook.models.decoder import Decoder
from jaxcook.models.layers import set_matmul_dtype
from jaxcook.types import AdamParams, Datum, ModelInput

TINY20M = {
    "model_type": "llama",
    "vocab_size": 49152,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}


def matmul_peak_flops(n: int = 2048, iters: int = 5, dtype=jnp.float32) -> float:
    if jax.default_backend() != "cpu":
        n, iters = 8192, 20
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(iters):
        f(a).block_until_ready()
    return 2 * n**3 * iters / (time.perf_counter() - t)


def step_flops(cfg: ModelConfig, tokens: int, seq: int, lora: bool) -> float:
    D, F, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers
    per_layer = D * cfg.num_heads * cfg.head_dim * 2 + D * cfg.num_kv_heads * cfg.head_dim * 2 + 3 * D * F
    n = L * per_layer + D * cfg.vocab_size
    attention = 2 * L * tokens * seq * cfg.num_heads * cfg.head_dim  # QK^T and PV, forward
    return (4 if lora else 6) * n * tokens + (4 if lora else 6) * attention


def time_steps(step, iters: int) -> float:
    step()  # compile / warm up
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t) / iters


SMOLLM2_135M = {
    **TINY20M,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
}


def jax_model(name: str, lora, random_weights: bool = False, dtype=jnp.float32):
    if name == "smollm2" and not random_weights:
        return load("smollm2-135m-instruct", lora=lora, tokenizer=False, param_dtype=dtype).model
    return Decoder(
        ModelConfig.from_hf(SMOLLM2_135M if name == "smollm2" else TINY20M), lora=lora, param_dtype=dtype
    )


def bench_jax(
    name, mode, batch, seq, iters, rank, random_weights=False, dtype=jnp.float32, matmul_dtype="float32"
):
    lora = LoraConfig(rank=rank, train_unembed=False) if mode == "lora" else None
    model = set_matmul_dtype(jax_model(name, lora, random_weights, dtype), matmul_dtype)
    client = LocalTrainingClient(
        model, lora=lora, buckets=BucketConfig(seq_buckets=(seq,), batch_buckets=(batch,))
    )
    rng = np.random.default_rng(0)
    data = []
    for _ in range(batch):
        tokens = rng.integers(0, model.config.vocab_size, seq + 1)
        data.append(
            Datum(
                ModelInput.from_ints(tokens[:-1].tolist()),
                {"target_tokens": tokens[1:], "weights": np.ones(seq, np.float32)},
            )
        )
    adam = AdamParams(learning_rate=1e-5)

    def step():
        client.forward_backward(data)
        client.optim_step(adam).result()

    return time_steps(step, iters), model.config


def torch_model(name: str):
    import transformers

    if name == "smollm2":
        return torch_smollm2()
    cfg = transformers.LlamaConfig(**{k: v for k, v in TINY20M.items() if k != "model_type"})
    return transformers.LlamaForCausalLM(cfg)


def bench_torch(name, mode, batch, seq, iters, rank, matmul_dtype="float32", dtype="float32"):
    import torch

    model = torch_model(name).to(getattr(torch, dtype)).train()
    if mode == "lora":
        import peft

        model = peft.get_peft_model(
            model, peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGET_MODULES)
        )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.95))
    x = torch.randint(0, model.config.vocab_size, (batch, seq + 1))

    autocast = matmul_dtype == "bfloat16"

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), x[:, 1:].flatten(), reduction="sum"
        )
        loss.backward()
        opt.step()
        opt.zero_grad()

    return time_steps(step, iters)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--models", default="smollm2,tiny20m")
    p.add_argument("--modes", default="lora,full")
    p.add_argument("--no-peer", action="store_true", help="time jaxcook alone (no torch)")
    p.add_argument("--random-weights", action="store_true", help="SmolLM2-135M's shapes, random weights")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="base weights")
    p.add_argument("--matmul-dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args()
    dtype = jnp.dtype(args.dtype)
    print(describe(torch_too=not args.no_peer))
    peak = matmul_peak_flops(dtype=dtype)
    if args.matmul_dtype == "bfloat16":
        peak = jax_peaks()["jax bf16"] * 1e9 if jax.default_backend() == "cpu" else peak
    tokens = args.batch * args.seq
    threads = ""
    if not args.no_peer:
        import torch

        threads = f"torch threads {torch.get_num_threads()}, "
    print(
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {threads}measured "
        f"matmul peak {peak / 1e9:.1f} GFLOP/s; batch {args.batch} x {args.seq}, weights {args.dtype}, "
        f"matmuls {args.matmul_dtype}"
    )
    for name in args.models.split(","):
        for mode in args.modes.split(","):
            jax_s, cfg = bench_jax(
                name,
                mode,
                args.batch,
                args.seq,
                args.iters,
                args.rank,
                args.random_weights,
                dtype,
                args.matmul_dtype,
            )
            flops = step_flops(cfg, tokens, args.seq, mode == "lora")
            line = (
                f"{name:8s} {mode:4s}  jaxcook {tokens / jax_s:8.1f} tok/s ({jax_s:6.3f} s, "
                f"{flops / jax_s / peak:5.1%} of peak)"
            )
            if not args.no_peer:
                torch_s = bench_torch(
                    name, mode, args.batch, args.seq, args.iters, args.rank, args.matmul_dtype, args.dtype
                )
                line += (
                    f"  pytorch {tokens / torch_s:8.1f} tok/s ({torch_s:6.2f} s, "
                    f"{flops / torch_s / peak:5.1%})  ratio {torch_s / jax_s:.2f}x"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
