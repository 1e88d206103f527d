"""Sampling throughput of SmolLM2-135M-Instruct: jaxcook's sampler vs transformers `generate`.

    python -m benchmarks.sampler [--iters 2] [--settings 8x64x128,32x64x64] [--skip-torch]
                                 [--matmul-dtype float32|bfloat16]

For each setting BxPxN (batch B of distinct random P-token prompts, N new tokens each, EOS
ignored on both sides so both generate exactly N tokens; sampling at temperature 1 with no
top-k / top-p) it prints, for jaxcook (`LocalSamplingClient.sample_many`, f32) and for PyTorch
(`AutoModelForCausalLM.generate` on the same GGUF, f32, CPU):

- new tokens/s: B * N / wall time of a whole call (prefill included);
- decode tokens/s: B * (N - 1) / (time of the N-token call - time of a 1-token call), i.e.
  the rate of the decode loop alone;

and the ratio jaxcook / PyTorch of each. Times are the best of `--iters` rounds after a warm-up (jaxcook's
warm-up compiles); each round runs jaxcook and PyTorch one after the other, so a change of
machine load hits both. The 1-minute load average is printed before and after: on a shared
machine the numbers move with it. `--matmul-dtype bfloat16` runs jaxcook's projections with bf16
operands (`model.matmul_dtype`) and PyTorch's `generate` under `torch.autocast("cpu", bfloat16)`.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np


def timed(run, n: int) -> float:
    start = time.perf_counter()
    run(n)
    return time.perf_counter() - start


@functools.cache
def jaxcook_client(matmul_dtype: str = "float32"):
    from jaxcook.models import load
    from jaxcook.models.layers import set_matmul_dtype
    from jaxcook.sampling import LocalSamplingClient

    lm = load("smollm2-135m-instruct")
    set_matmul_dtype(lm.model, matmul_dtype)
    return LocalSamplingClient.from_model(lm.model, lm.tokenizer, seed=0)


@functools.cache
def torch_model():
    import torch
    import transformers

    from jaxcook.models import resolve

    gguf = resolve("smollm2-135m-instruct").path
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()


def jaxcook_runner(B: int, prompts: np.ndarray, matmul_dtype: str):
    import jax

    from jaxcook.types import ModelInput, SamplingParams

    client = jaxcook_client(matmul_dtype)
    inputs = [ModelInput.from_ints(p.tolist()) for p in prompts[:B]]

    def run(n: int):
        params = SamplingParams(max_tokens=n, stop=[], temperature=1.0)
        out = client.sample_many(inputs, 1, params).result()
        assert all(len(r.sequences[0].tokens) == n for r in out)

    return run, f"jaxcook ({jax.default_backend()}, float32, matmuls {matmul_dtype})"


def torch_runner(B: int, prompts: np.ndarray, matmul_dtype: str):
    import torch

    autocast = matmul_dtype == "bfloat16"

    hf = torch_model()
    ids = torch.tensor(prompts[:B], dtype=torch.long)
    mask = torch.ones_like(ids)

    def run(n: int):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = hf.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                pad_token_id=hf.config.eos_token_id,
            )
        assert out.shape[1] == ids.shape[1] + n

    return run, f"pytorch  (cpu, float32, autocast {autocast}, {torch.get_num_threads()} threads)"


def interleaved(runners: dict, N: int, iters: int) -> dict:
    """Best time of each (runner, n) for n in (N, 1), runs interleaved round by round so a
    change in machine load hits every runner alike."""
    for run in runners.values():  # warm-up: compiles
        run(N), run(1)
    best = {}
    for _ in range(iters):
        for name, run in runners.items():
            for n in (N, 1):
                best[name, n] = min(best.get((name, n), float("inf")), timed(run, n))
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--settings", default="8x64x128,32x64x64", help="comma-separated BxPxN")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--matmul-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    from benchmarks.machine import describe

    print(describe(torch_too=not args.skip_torch))
    settings = [tuple(int(x) for x in s.split("x")) for s in args.settings.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for B, P, N in settings:
        prompts = np.random.default_rng(0).integers(100, 49152, (B, P))
        makers = [jaxcook_runner] + ([] if args.skip_torch else [torch_runner])
        runners = dict(make(B, prompts, args.matmul_dtype)[::-1] for make in makers)
        best = interleaved(runners, N, args.iters)
        rates = {}
        for name in runners:
            t_full, t_one = best[name, N], best[name, 1]
            rates[name] = (B * N / t_full, B * (N - 1) / max(t_full - t_one, 1e-9))
            print(
                f"B={B:3d} prompt={P} new={N}  {name}: {rates[name][0]:7.1f} new tokens/s "
                f"({t_full:.2f} s), decode {rates[name][1]:7.1f} tokens/s"
            )
        if len(rates) == 2:
            (j_full, j_dec), (t_full, t_dec) = rates.values()
            print(
                f"B={B:3d}  ratio jaxcook/pytorch: {j_full / t_full:.2f}x new tokens/s, "
                f"{j_dec / t_dec:.2f}x decode"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
