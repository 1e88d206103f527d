"""Tiny MoE models on one device and on `expert` meshes of 8 fake CPU devices, in one process: a
LoRA train step (loss, grads, the expert weights' shardings), the logits after it, and sampling on
the same mesh (for test_expert_parallel).

XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.models.expert_mesh OUT CASE...

CASE: `family:data,fsdp,expert,tensor[:sample]`, e.g. `qwen3_moe:1,2,4,1:sample`; each family's
one-device reference runs first. OUT (npz) holds `{family}/{mesh}/...` arrays and `info` (json).
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
from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.types import AdamParams, ModelInput, SamplingParams
from tests.engine.tiny import random_datums

BASE = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)
HF = {
    "llama": dict(BASE, model_type="llama", head_dim=8),  # dense: `expert` is data parallelism
    "qwen3_moe": dict(
        BASE,
        model_type="qwen3_moe",
        head_dim=8,
        moe_intermediate_size=16,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        router_aux_loss_coef=0.01,
        output_router_logits=True,
    ),
    "gpt_oss": dict(
        BASE,
        model_type="gpt_oss",
        head_dim=8,
        intermediate_size=16,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=9,
        layer_types=["sliding_attention", "full_attention"],
    ),
    "deepseek_v3": dict(
        BASE,
        model_type="deepseek_v3",
        num_hidden_layers=3,
        num_key_value_heads=4,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=8,
        v_head_dim=8,
        moe_intermediate_size=16,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
    ),
}
PROMPTS = ([5, 6, 7], [9] * 11, [1, 2, 3, 4, 5, 6])


def config(family: str) -> ModelConfig:
    return ModelConfig.from_hf(HF[family], source=f"{family} test config")


def tree_np(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def expert_layout(tree, num_experts: int) -> dict[str, list]:
    """keystr -> [spec of the expert axis (axis 1, after `layers`), the experts per addressable
    shard (every shard), #shards] for every expert weight of a stacked state."""
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        key = jax.tree_util.keystr(path)
        if "['experts']" not in key or "shared" in key:
            continue
        assert x.shape[1] == num_experts, (key, x.shape)
        spec = tuple(x.sharding.spec) + (None,) * x.ndim
        axis = spec[1] if not isinstance(spec[1], tuple) else list(spec[1])
        out[key] = [axis, sorted({s.data.shape[1] for s in x.addressable_shards}), len(x.addressable_shards)]
    return out


def logits(client: LocalTrainingClient, tokens_BT):
    """Final logits [B, T, V] of the client's current weights, on its mesh."""

    @jax.jit
    def run(params, frozen, tokens_BT):
        model = nnx.merge(client.graphdef, params, frozen)
        B, T = tokens_BT.shape
        positions = jnp.broadcast_to(jnp.arange(T), (B, T))
        with sharding.activation_mesh(client.mesh):
            return model.unembed(model(tokens_BT, positions, jnp.ones((B, T), jnp.int32)))

    tokens_BT = jax.device_put(tokens_BT, sharding.batch_sharding(client.mesh))
    args = (client._state.params, client.frozen, tokens_BT)
    return np.asarray(run(*args)), run.lower(*args).as_text()


def sample(client: LocalTrainingClient) -> dict[str, np.ndarray]:
    sc = LocalSamplingClient.from_training_client(client)
    prompts = [ModelInput.from_ints(p) for p in PROMPTS]
    # drawn at temperature 1 with prompt log-probs: one decode program, and a token drawn from
    # slightly different logits would show (greedy needs a near-tie to)
    drawn = sc.sample_many(prompts, 2, SamplingParams(max_tokens=8, seed=7, stop=[]), True).result()
    out = {}
    for tag, responses in (("drawn", drawn),):
        for i, r in enumerate(responses):
            for j, seq in enumerate(r.sequences):
                out[f"{tag}{i}.{j}.tokens"] = np.asarray(seq.tokens)
                out[f"{tag}{i}.{j}.logprobs"] = np.asarray(seq.logprobs, np.float32)
            if r.prompt_logprobs is not None:
                out[f"{tag}{i}.prompt"] = np.asarray(r.prompt_logprobs[1:], np.float32)
    mesh = sc.graph.mesh
    sc.close()
    return out, None if mesh is None else dict(mesh.shape)


def run_case(family: str, sizes: tuple[int, ...], with_sample: bool, arrays: dict, info: dict):
    cfg = config(family)
    data, fsdp, expert, tensor = sizes
    devices = jax.devices()[: data * fsdp * expert * tensor]
    mesh_config = sharding.MeshConfig(data=data, fsdp=fsdp, expert=expert, tensor=tensor)
    mesh = sharding.make_mesh(mesh_config, devices)
    lora = LoraConfig(rank=4)
    model = Decoder(cfg, lora=lora, rngs=nnx.Rngs(params=0, lora=1))
    client = LocalTrainingClient(
        model, lora=lora, mesh=mesh, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(8,))
    )
    tag = f"{family}/{','.join(map(str, sizes))}"
    fb = client.forward_backward(random_datums(8, seed=0)).result()
    state = client.current_state().result()
    E = cfg.moe.num_experts if cfg.moe is not None else 0
    layout = {
        "frozen": expert_layout(client.frozen, E),
        "params": expert_layout(state.params, E),
        "grads": expert_layout(state.grad_accum, E),
    }
    grads = tree_np(state.grad_accum)
    client.optim_step(AdamParams(learning_rate=1e-2)).result()  # the adapters now change the outputs
    state = client.current_state().result()
    layout["mu"] = expert_layout(state.opt_state.mu, E)
    layout["nu"] = expert_layout(state.opt_state.nu, E)
    tokens_BT = np.random.default_rng(1).integers(0, 97, (8, 16)).astype(np.int32)
    logits_BTV, hlo = logits(client, tokens_BT)
    q = state.params["layers"]["self_attn"]
    q = q["q_proj"] if "q_proj" in q else q["q_b_proj"]
    arrays[f"{tag}/loss"] = np.asarray(fb.metrics["loss:sum"])
    arrays[f"{tag}/logits"] = logits_BTV
    arrays.update({f"{tag}/grad{k}": v for k, v in grads.items()})
    info[tag] = {
        "layout": layout,
        "manual": "manual_computation" in hlo or "SPMDFullToShardShape" in hlo,
        "q_lora_b": [str(q["lora_b"][...].sharding.spec)],
        "batch": str(sharding.batch_sharding(mesh).spec),
    }
    if with_sample:
        drawn, graph_mesh = sample(client)
        arrays.update({f"{tag}/sample/{k}": v for k, v in drawn.items()})
        info[tag]["sampler_mesh"] = graph_mesh
    client.close()


def main(out: str, *cases: str):
    arrays, info, done = {}, {}, set()
    sampled = {c.split(":")[0] for c in cases if c.endswith(":sample")}
    for case in cases:
        family, sizes, *rest = case.split(":")
        with_sample = rest == ["sample"]
        if family not in done:  # the one-device reference, first
            run_case(family, (1, 1, 1, 1), family in sampled, arrays, info)
            done.add(family)
        run_case(family, tuple(int(s) for s in sizes.split(",")), with_sample, arrays, info)
    np.savez(out, info=json.dumps(info), **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
