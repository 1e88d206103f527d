"""Forward throughput of SmolLM2-135M-Instruct: jaxcook (JAX) vs transformers (PyTorch), same input.

    python -m benchmarks.forward [--batch 8] [--seq 256] [--iters 5] [--dtype float32]
                                 [--matmul-dtype float32|bfloat16]

Prints tokens/s for each and the ratio jaxcook / PyTorch. Both run on this machine's CPU (or
jaxcook on the default JAX device) in the same process, one after the other.
`--matmul-dtype bfloat16`: bf16 operands with f32 accumulation in every projection on both
sides (jaxcook's `model.matmul_dtype`, PyTorch's `torch.autocast("cpu", torch.bfloat16)`).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.machine import describe
from benchmarks.peers import torch_smollm2
from jaxcook.models import load
from jaxcook.models.layers import set_matmul_dtype


def time_it(fn, iters: int) -> float:
    fn()  # warm-up / compile
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--matmul-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    print(describe())

    tokens = np.random.default_rng(0).integers(0, 49152, (args.batch, args.seq))
    lm = load("smollm2-135m-instruct", param_dtype=getattr(jnp, args.dtype), tokenizer=False)
    set_matmul_dtype(lm.model, args.matmul_dtype)
    tokens_BT = jnp.asarray(tokens)

    @jax.jit
    def forward(model, tokens_BT):
        positions = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
        hidden = model(tokens_BT, positions, jnp.ones_like(tokens_BT))
        return model.unembed(hidden[:, -1])  # last-position logits, as generation needs

    jax_s = time_it(lambda: jax.block_until_ready(forward(lm.model, tokens_BT)), args.iters)
    n = args.batch * args.seq
    print(
        f"jaxcook  ({jax.default_backend()}, {args.dtype}, matmuls {args.matmul_dtype}): "
        f"{n / jax_s:10.1f} tokens/s ({jax_s * 1e3:.1f} ms)"
    )

    import torch

    hf = torch_smollm2().eval()
    if args.dtype == "bfloat16":
        hf = hf.to(torch.bfloat16)
    x = torch.tensor(tokens)

    autocast = args.matmul_dtype == "bfloat16"

    def torch_forward():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return hf(x, logits_to_keep=1).logits

    torch_s = time_it(torch_forward, args.iters)
    print(
        f"pytorch  (cpu, {args.dtype}, autocast {autocast}, {torch.get_num_threads()} threads): "
        f"{n / torch_s:10.1f} tokens/s "
        f"({torch_s * 1e3:.1f} ms)"
    )
    print(f"ratio jaxcook/pytorch: {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()
