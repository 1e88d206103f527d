"""Memory plan by simulation: per-device bytes of a LoRA train step and a decode step, AOT-compiled
on abstract shapes over fake CPU devices (nothing is allocated, no weights are read).

    python -m benchmarks.memory_plan [--plans 8b-1,8b-8,70b-64] [--tokens 4096]

Each plan builds Llama-3.1-8B or -70B shapes as `jax.ShapeDtypeStruct`s carrying their target
`NamedSharding`s (`engine.sharding`), lowers the jaxcook train step (`StepFunctions`
forward_backward: LoRA r32 on every projection, bf16 base, f32 adapters/Adam, cross-entropy over
chunked vocab-parallel logits) and a decode step (one token per sequence through the cached
decoder, KV cache sharded over batch and kv-heads), compiles them with XLA:CPU, and prints
`compiled.memory_analysis()`: arguments (weights, optimizer state, batch, cache), outputs,
aliased (donated) bytes and temporaries. Peak per device = arguments + outputs - aliased +
temporaries. The goals of issue 12 are checked against it.

Caveats, printed with the plan: XLA:CPU's buffer assignment and fusion differ from XLA:GPU/TPU,
and CPU attention is the plain XLA softmax (scores [B, K, G, T, S] materialised per layer),
where cuDNN / splash flash attention on an accelerator keeps O(T) memory; so these numbers are
an estimate for an accelerator, pessimistic in attention. The decode step is the scanned cached
forward of `Decoder`, which holds the same weights and cache as the sampler (whose CPU decode
loop unrolls the layers for speed).
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules:  # fake devices must be configured before JAX starts
    # XLA:CPU has no bf16 matmul: it converts each bf16 weight to f32 and, left alone, hoists the
    # converts of every layer's weights out of the layer loop (a full f32 copy of the model in
    # temporaries, a CPU artefact). Accelerators multiply bf16 directly; keep the pass off.
    os.environ.setdefault(
        "XLA_FLAGS",
        "--xla_force_host_platform_device_count=64 --xla_disable_hlo_passes=while-loop-invariant-code-motion",
    )
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcook import lora as lora_lib
from jaxcook.engine import sharding
from jaxcook.engine.batching import Batch
from jaxcook.engine.train_step import StepFunctions, TrainState, _cached_loss, init_train_state
from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder, init_cache

GB = 1e9
LLAMA_8B = ModelConfig(
    model_type="llama",
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    rope_theta=500000.0,
)
LLAMA_70B = ModelConfig(
    model_type="llama",
    vocab_size=128256,
    hidden_size=8192,
    intermediate_size=28672,
    num_layers=80,
    num_heads=64,
    num_kv_heads=8,
    head_dim=128,
    rope_theta=500000.0,
)


@dataclass(frozen=True, kw_only=True)
class Plan:
    name: str
    model: ModelConfig
    mesh: sharding.MeshConfig
    devices: int
    batch: int  # sequences per train step (and decode batch)
    goal_gb: float | None  # per-device memory the issue asks this plan to fit
    remat: bool = True


PLANS = {
    "8b-1": Plan(
        name="Llama-3.1-8B LoRA, 1 device",
        model=LLAMA_8B,
        mesh=sharding.MeshConfig(fsdp=1),
        devices=1,
        batch=8,
        goal_gb=80,
    ),
    "8b-8": Plan(
        name="Llama-3.1-8B LoRA, 8 devices",
        model=LLAMA_8B,
        mesh=sharding.MeshConfig(fsdp=4, tensor=2),
        devices=8,
        batch=8,
        goal_gb=None,
    ),
    "70b-8": Plan(
        name="Llama-3.1-70B LoRA, 8 devices",
        model=LLAMA_70B,
        mesh=sharding.MeshConfig(fsdp=8),
        devices=8,
        batch=8,
        goal_gb=None,
    ),
    "70b-64": Plan(
        name="Llama-3.1-70B LoRA, 64 devices",
        model=LLAMA_70B,
        mesh=sharding.MeshConfig(fsdp=64),
        devices=64,
        batch=64,
        goal_gb=16,
    ),
    # With tensor=4 each device holds 4 rows, and the scan keeps every layer's [4, 4096, 8192]
    # input (replicated over `tensor`): 80 x 268 MB. Printed to show why the plan above is FSDP.
    "70b-64-tp4": Plan(
        name="Llama-3.1-70B LoRA, 64 devices, tensor=4",
        model=LLAMA_70B,
        mesh=sharding.MeshConfig(fsdp=16, tensor=4),
        devices=64,
        batch=64,
        goal_gb=16,
    ),
}


def abstract(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_batch(B: int, T: int, mesh) -> Batch:
    row = sharding.batch_sharding(mesh)
    i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=row)
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=row)
    return Batch(
        tokens_BT=i32(B, T),
        positions_BT=i32(B, T),
        segment_ids_BT=i32(B, T),
        datum_ids_BT=i32(B, T),
        mask_BT=f32(B, T),
        targets_BT=i32(B, T),
        inputs={"weights": f32(B, T)},
        datum_valid_D=f32(B),
        score_idx_BP=i32(B, 0),
    )


def stats(compiled) -> dict[str, float]:
    m = compiled.memory_analysis()
    out = {
        "arguments": m.argument_size_in_bytes,
        "outputs": m.output_size_in_bytes,
        "aliased": m.alias_size_in_bytes,
        "temporaries": m.temp_size_in_bytes,
    }
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    return {k: v / GB for k, v in out.items()}


def train_step_memory(plan: Plan, mesh, tokens: int, rank: int) -> dict[str, float]:
    lora = lora_lib.LoraConfig(rank=rank)
    model = nnx.eval_shape(lambda: Decoder(plan.model, lora=lora, param_dtype=jnp.bfloat16))
    graphdef, trainable, frozen = lora_lib.split(model, lora)
    state = jax.eval_shape(lambda p: init_train_state(p), trainable)
    like = sharding.state_shardings(trainable, mesh)
    rep = sharding.replicated(mesh)
    state_sh = TrainState(rep, like, type(state.opt_state)(rep, like, like), like, rep)
    steps = StepFunctions(graphdef, remat=plan.remat, mesh=mesh)
    args = (
        abstract(state, state_sh),
        abstract(frozen, sharding.state_shardings(frozen, mesh)),
        abstract_batch(plan.batch, tokens, mesh),
    )
    lowered = StepFunctions._forward_backward.lower(steps, *args, _cached_loss("cross_entropy", ()))
    return stats(lowered.compile())


def decode_step_memory(plan: Plan, mesh, context: int) -> dict[str, float]:
    """One new token for each of `plan.batch` sequences over a `context`-slot bf16 KV cache."""
    cfg, B = plan.model, plan.batch
    model = nnx.eval_shape(lambda: Decoder(cfg, param_dtype=jnp.bfloat16))
    graphdef, state = nnx.split(model)
    weights = abstract(state, sharding.state_shardings(state, mesh))
    batch_axes = sharding.BATCH_AXES
    kv = NamedSharding(mesh, P(None, batch_axes, None, "tensor", None))  # [L, B, S, K, D]
    cache_sh = {
        "k": kv,
        "v": kv,
        "segment_ids": NamedSharding(mesh, P(batch_axes)),
        "index": sharding.replicated(mesh),
    }
    cache = abstract(jax.eval_shape(lambda: init_cache(cfg, B, context, jnp.bfloat16)), cache_sh)
    tok = jax.ShapeDtypeStruct((B, 1), jnp.int32, sharding=sharding.batch_sharding(mesh))

    def step(state, cache, tokens_B1):
        m = nnx.merge(graphdef, state)
        with sharding.activation_mesh(mesh):
            h_B1D, cache = m(tokens_B1, tokens_B1, jnp.ones_like(tokens_B1), cache=cache)
            logits_BV = m.unembed(h_B1D[:, 0])
        return jnp.argmax(logits_BV, axis=-1), cache

    lowered = jax.jit(step, donate_argnums=(1,)).lower(weights, cache, tok)
    return stats(lowered.compile())


def row(label: str, s: dict[str, float]) -> str:
    return (
        f"  {label:<28} peak {s['peak']:7.2f} GB = args {s['arguments']:6.2f} + out {s['outputs']:6.2f}"
        f" - aliased {s['aliased']:6.2f} + temp {s['temporaries']:6.2f}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plans", default="8b-1,8b-8,70b-64")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per sequence (train) / cache slots")
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args(argv)
    names = args.plans.split(",")
    unknown = [n for n in names if n not in PLANS]
    if unknown:
        raise SystemExit(f"--plans: unknown {unknown}; known: {sorted(PLANS)}")
    print(f"jax {jax.__version__}, {jax.device_count()} fake {jax.default_backend()} devices")
    print("remat policy: each decoder layer under jax.checkpoint (nothing saved inside a layer;")
    print("  the scan keeps each layer's [B, T, D] input) + attention scores rematerialised")
    print("caveat: XLA:CPU buffer assignment; CPU attention materialises [B, K, G, T, S] f32 scores")
    print("  (flash attention on GPU/TPU does not), so attention temporaries are pessimistic")
    for name in names:
        plan = PLANS[name]
        mesh = sharding.make_mesh(plan.mesh, devices=jax.devices()[: plan.devices])
        shape = dict(mesh.shape)
        print(
            f"\n{plan.name}: mesh data={shape['data']} x fsdp={shape['fsdp']} x tensor={shape['tensor']},"
            f" batch {plan.batch} x {args.tokens} tokens, LoRA r{args.rank}, bf16 base"
        )
        t0 = time.perf_counter()
        train = train_step_memory(plan, mesh, args.tokens, args.rank)
        print(row("train step (fwd+bwd)", train) + f"   [{time.perf_counter() - t0:.0f} s to compile]")
        t0 = time.perf_counter()
        dec = decode_step_memory(plan, mesh, args.tokens)
        print(row(f"decode step ({args.tokens}-slot cache)", dec) + f"   [{time.perf_counter() - t0:.0f} s]")
        if plan.goal_gb is not None:
            verdict = "FITS" if train["peak"] <= plan.goal_gb else "DOES NOT FIT"
            print(f"  goal: train step within {plan.goal_gb:.0f} GB per device -> {verdict}")


if __name__ == "__main__":
    main()
