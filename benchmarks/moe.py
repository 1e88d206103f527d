"""Mixture-of-experts forward + backward throughput: jaxcook vs transformers, same weights and tokens.

    python -m benchmarks.moe [--batch 8] [--seq 256] [--iters 3] [--experts 8] [--top-k 2]
                             [--hidden 512] [--moe-width 1024] [--layers 4] [--dtype float32]

A random Qwen3-MoE config (by default 8 experts, top-2, hidden 512, expert width 1024, 4 layers,
vocab 8192) is saved once by transformers; jaxcook loads the same folder. Each side times one
forward + backward (the summed next-token cross-entropy, gradients for every parameter) of
batch x seq tokens on this machine, in the same process, one after the other, and the script
prints tokens/s and the ratio jaxcook / transformers. `--dtype float32`: f32 products on both
sides; `--dtype bfloat16`: f32 weights with bf16 matrix products and f32 accumulation on both
sides (jaxcook `model.matmul_dtype=bfloat16`, its experts through the grouped oneMKL / oneDNN
kernel; transformers under `torch.autocast("cpu", torch.bfloat16)`).
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.forward import time_it
from benchmarks.machine import describe
from jaxcook.core.logprobs import chunked_target_logprobs
from jaxcook.kernels import cpu_gemm
from jaxcook.models import load
from jaxcook.models.layers import set_matmul_dtype


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--moe-width", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args()
    print(describe())

    import torch
    import transformers

    vocab = 8192
    config = transformers.Qwen3MoeConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        moe_intermediate_size=args.moe_width,
        num_hidden_layers=args.layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=args.hidden // 8,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.Qwen3MoeForCausalLM(config).float().train()
    folder = tempfile.mkdtemp(prefix="jaxcook-moe-bench-")
    hf.save_pretrained(folder)
    model = set_matmul_dtype(load(folder, tokenizer=False).model, args.dtype)

    tokens = np.random.default_rng(0).integers(0, vocab, (args.batch, args.seq + 1))
    inputs_BT, targets_BT = jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])
    graphdef, params = nnx.split(model)

    @jax.jit
    def grads(params, inputs_BT, targets_BT):
        def loss(params):
            m = nnx.merge(graphdef, params)
            positions = jnp.broadcast_to(jnp.arange(inputs_BT.shape[1]), inputs_BT.shape)
            hidden = m(inputs_BT, positions, jnp.ones_like(inputs_BT))
            return -jnp.sum(chunked_target_logprobs(m.unembed, hidden, targets_BT))

        return jax.grad(loss)(params)

    jax_s = time_it(lambda: jax.block_until_ready(grads(params, inputs_BT, targets_BT)), args.iters)

    t_in, t_tg = torch.tensor(tokens[:, :-1]), torch.tensor(tokens[:, 1:])

    autocast = torch.autocast("cpu", torch.bfloat16, enabled=args.dtype == "bfloat16")

    def torch_step():
        hf.zero_grad(set_to_none=True)
        with autocast:
            logits = hf(t_in).logits.float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), t_tg.reshape(-1), reduction="sum")
        loss.backward()

    torch_s = time_it(torch_step, args.iters)
    n = args.batch * args.seq
    print(
        f"MoE {args.experts} experts top-{args.top_k}, hidden {args.hidden}, width {args.moe_width}, "
        f"{args.layers} layers; {args.batch} x {args.seq} tokens, "
        f"{'f32' if args.dtype == 'float32' else 'bf16 products (f32 weights)'}, forward + backward"
    )
    ours = f"{jax.default_backend()}, bf16 kernel {cpu_gemm.kernel_status()}"
    print(f"jaxcook      {jax_s:.3f} s  {n / jax_s:8.1f} tokens/s  ({ours})")
    impl = getattr(hf.config, "_experts_implementation", "eager")
    peer = f"torch {torch.__version__}, experts {impl}"
    print(f"transformers {torch_s:.3f} s  {n / torch_s:8.1f} tokens/s  ({peer})")
    print(f"ratio {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()
