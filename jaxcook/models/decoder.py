"""The decoder (Llama 3.x, Qwen2, Qwen3, SmolLM2, Mistral, Qwen3-MoE, Gemma 3, GPT-OSS, DeepSeek
V3 / Kimi K2) in Flax NNX.

Family differences are config switches: a sparse MLP (`cfg.moe`, see `moe.py`), sliding-window
layers (`cfg.sliding_window`, `cfg.layer_types`; each layer picks its kind's rope and mask from
`attention_inputs`), Gemma's scaled embedding, (1 + w) norms and sandwich norms, GPT-OSS's
attention sinks and its MLP (`gpt_oss.py`), DeepSeek's latent attention (`cfg.mla`, `mla.py`)
and MoE (`deepseek.py`).

Layers are stacked (every layer parameter has a leading `layers` axis) and applied with
`lax.scan`, so a 30-layer model compiles one layer body. DeepSeek's first
`cfg.first_dense_layers` layers have a dense MLP instead of the MoE: they are `dense_layers`,
unstacked and applied one by one before the scan (1 to 3 layers in the released checkpoints).
The forward returns final-norm hidden states; `unembed` turns (a chunk of) them into logits, so
training never has to hold full-vocabulary logits for a whole batch.

KV cache: `init_cache` returns `{"k", "v": [L, B, S, K, D], "segment_ids": [B, S], "index": ()}`
(latent attention: `k` the kv latents [L, B, S, 1, r], `v` the rope keys [L, B, S, 1, dr]).
A call with a cache writes its T new keys/values at slots `index .. index+T` and attends over
the cache with the same segment rule as training (`attention.attention_mask`). Prefill and
single-step decode are the same call with T = prompt length or 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.lora import LoraConfig
from jaxcook.models import moe as moe_lib
from jaxcook.models.attention import attention_mask, gqa_attention
from jaxcook.models.config import ModelConfig
from jaxcook.models.deepseek import DeepseekMoE
from jaxcook.models.fused import swiglu
from jaxcook.models.gpt_oss import GptOssMoE, Sinks
from jaxcook.models.layers import Embed, Linear, LoraAdapter, RMSNorm
from jaxcook.models.mla import MLAttention
from jaxcook.models.moe import MoE
from jaxcook.models.rope import apply_rope, attention_factor, inverse_frequencies, rope_cos_sin


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora_rank: int, lora_alpha, param_dtype, rngs: nnx.Rngs):
        D, H, K, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(D, H * hd, axes=("embed", "heads"), use_bias=cfg.qkv_bias, **common)
        self.k_proj = Linear(D, K * hd, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **common)
        self.v_proj = Linear(D, K * hd, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **common)
        self.o_proj = Linear(H * hd, D, axes=("heads", "embed"), use_bias=cfg.o_bias, **common)
        self.sinks = Sinks(H, param_dtype=param_dtype) if cfg.attn_sinks else None
        # Qwen3: RMSNorm over head_dim on each query and key head, before RoPE.
        norm = dict(eps=cfg.rms_norm_eps, axis_name=None, offset=cfg.norm_offset, param_dtype=param_dtype)
        self.q_norm = RMSNorm(hd, **norm) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, **norm) if cfg.qk_norm else None
        self.shape = (H, K, hd)
        self.scale = None if cfg.query_pre_attn_scalar is None else cfg.query_pre_attn_scalar**-0.5

    def __call__(self, x_BTD, cos, sin, mask_BTS, cache_kv=None, cache_index=None):
        B, T, _ = x_BTD.shape
        H, K, hd = self.shape
        q_BTHD = self.q_proj(x_BTD).reshape(B, T, H, hd)
        k_BTKD = self.k_proj(x_BTD).reshape(B, T, K, hd)
        v_BTKD = self.v_proj(x_BTD).reshape(B, T, K, hd)
        if self.q_norm is not None:
            q_BTHD, k_BTKD = self.q_norm(q_BTHD), self.k_norm(k_BTKD)
        q_BTHD, k_BTKD = apply_rope(q_BTHD, cos, sin), apply_rope(k_BTKD, cos, sin)
        if cache_kv is not None:  # write the new keys at slots index..index+T, attend over the cache
            k_cache, v_cache = cache_kv
            k_BTKD = jax.lax.dynamic_update_slice(
                k_cache, k_BTKD.astype(k_cache.dtype), (0, cache_index, 0, 0)
            )
            v_BTKD = jax.lax.dynamic_update_slice(
                v_cache, v_BTKD.astype(v_cache.dtype), (0, cache_index, 0, 0)
            )
        k, v = k_BTKD.astype(q_BTHD.dtype), v_BTKD.astype(q_BTHD.dtype)
        sinks = self.sinks() if self.sinks is not None else None
        out_BTHD = gqa_attention(q_BTHD, k, v, mask_BTS, self.scale, sinks)
        return self.o_proj(out_BTHD.reshape(B, T, H * hd)), (k_BTKD, v_BTKD)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); Gemma: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, *, lora_rank: int, lora_alpha, param_dtype, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(D, F, axes=("embed", "mlp"), **common)
        self.up_proj = Linear(D, F, axes=("embed", "mlp"), **common)
        self.down_proj = Linear(F, D, axes=("mlp", "embed"), **common)
        self.gelu = cfg.hidden_act == "gelu_pytorch_tanh"

    def __call__(self, x):
        if self.gelu:
            return self.down_proj(jax.nn.gelu(self.gate_proj(x), approximate=True) * self.up_proj(x))
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


MOE_BLOCKS = {"qwen3": MoE, "gpt_oss": GptOssMoE, "deepseek_v3": DeepseekMoE}  # by `MoeConfig.style`


class Block(nnx.Module):
    def __init__(
        self, cfg: ModelConfig, *, lora: LoraConfig | None, param_dtype, rngs: nnx.Rngs, dense: bool = False
    ):
        """`dense`: the dense MLP even in a MoE model (DeepSeek's first layers)."""
        alpha = lora.alpha if lora else None
        attn_rank = lora.rank if lora and lora.train_attn else 0
        mlp_rank = lora.rank if lora and lora.train_mlp else 0
        norm = dict(eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.self_attn = (Attention if cfg.mla is None else MLAttention)(
            cfg, lora_rank=attn_rank, lora_alpha=alpha, param_dtype=param_dtype, rngs=rngs
        )
        # Llama: the norm before the MLP. Gemma (sandwich): the norm after attention, with two
        # more around the MLP.
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm) if cfg.sandwich_norm else None
        self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, **norm) if cfg.sandwich_norm else None
        mlp = dict(lora_rank=mlp_rank, lora_alpha=alpha, param_dtype=param_dtype, rngs=rngs)
        if cfg.moe is None or dense:
            self.mlp = MLP(cfg, **mlp)
        else:
            self.mlp = MOE_BLOCKS[cfg.moe.style](cfg.moe, cfg.hidden_size, **mlp)

    def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None, *, valid=None):
        """(x, new_kv); with `valid` [B, T] (a MoE block), (x, new_kv, router stats)."""
        h, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_kv, cache_index)
        if self.pre_feedforward_layernorm is not None:
            x = x + self.post_attention_layernorm(h)
            h = self.mlp(self.pre_feedforward_layernorm(x))
            return x + self.post_feedforward_layernorm(h), new_kv
        x = x + h
        if valid is not None:
            h, stats = self.mlp(self.post_attention_layernorm(x), valid)
            return x + h, new_kv, stats
        return x + self.mlp(self.post_attention_layernorm(x)), new_kv


class Decoder(nnx.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        *,
        lora: LoraConfig | None = None,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        rngs = rngs or nnx.Rngs(params=0, lora=lora.seed if lora else 0)
        self.config, self.lora, self.param_dtype = cfg, lora, param_dtype
        self.embed_tokens = Embed(
            cfg.vocab_size, cfg.hidden_size, scaled=cfg.embed_scale, param_dtype=param_dtype, rngs=rngs
        )

        block = dict(lora=lora, param_dtype=param_dtype)
        dense = [Block(cfg, **block, rngs=rngs, dense=True) for _ in range(cfg.first_dense_layers)]
        self.dense_layers = nnx.List(dense) if dense else None

        @nnx.split_rngs(splits=cfg.stacked_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return Block(cfg, **block, rngs=rngs)

        self.layers = make_layers(rngs)
        self.norm = RMSNorm(
            cfg.hidden_size, eps=cfg.rms_norm_eps, offset=cfg.norm_offset, param_dtype=param_dtype
        )
        unembed_rank = lora.rank if lora and lora.train_unembed else 0
        alpha = lora.alpha if lora else None
        tied = cfg.tie_word_embeddings
        self.lm_head = (
            None
            if tied
            else Linear(
                cfg.hidden_size,
                cfg.vocab_size,
                axes=("embed", "vocab"),
                lora_rank=unembed_rank,
                lora_alpha=alpha,
                param_dtype=param_dtype,
                rngs=rngs,
            )
        )
        self.lm_head_lora = (
            LoraAdapter(
                cfg.hidden_size,
                cfg.vocab_size,
                rank=unembed_rank,
                alpha=alpha,
                axes=("embed", "vocab"),
                rngs=rngs,
            )
            if tied and unembed_rank
            else None
        )

    def attention_inputs(
        self, positions_BT, q_slot_T, k_slot_S, q_seg_BT, k_seg_BS, branch_ids_BT=None
    ) -> dict:
        """(cos, sin, mask) per attention kind the model has: "full" and/or "sliding".

        `branch_ids_BT` (no cache: queries and keys are the same slots) adds the shared-prefix
        rule of `attention.attention_mask`."""
        cfg = self.config
        kinds = set(cfg.sliding_layers())
        branches = (
            None if branch_ids_BT is None else (branch_ids_BT, branch_ids_BT, positions_BT, positions_BT)
        )
        out = {}
        if False in kinds:
            inv_freq = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
            mask = attention_mask(q_slot_T, k_slot_S, q_seg_BT, k_seg_BS, branches=branches)
            out["full"] = (*_scaled(rope_cos_sin(positions_BT, inv_freq), cfg.rope_scaling), mask)
        if True in kinds:
            local = cfg.local_rope_theta is not None  # Gemma 3: sliding layers use plain rope
            theta = cfg.local_rope_theta if local else cfg.rope_theta
            scaling = None if local else cfg.rope_scaling
            inv_freq = inverse_frequencies(cfg.head_dim, theta, scaling)
            mask = attention_mask(
                q_slot_T, k_slot_S, q_seg_BT, k_seg_BS, cfg.sliding_window, branches=branches
            )
            out["sliding"] = (*_scaled(rope_cos_sin(positions_BT, inv_freq), scaling), mask)
        return out

    def layer_inputs(self, inputs: dict, layer) -> tuple:
        """(cos, sin, mask) of layer `layer` (an int, or a traced index inside a scan)."""
        if len(inputs) == 1:
            return next(iter(inputs.values()))
        sliding_L = self.config.sliding_layers()
        if isinstance(layer, int):
            return inputs["sliding" if sliding_L[layer] else "full"]
        is_sliding = jnp.asarray(sliding_L)[layer]
        return jax.tree.map(lambda s, f: jnp.where(is_sliding, s, f), inputs["sliding"], inputs["full"])

    def __call__(
        self,
        tokens_BT,
        positions_BT,
        segment_ids_BT,
        *,
        cache=None,
        remat: bool = False,
        return_aux=False,
        branch_ids_BT=None,
    ):
        """Final-norm hidden states [B, T, D] (and the updated cache when one is given).

        `branch_ids_BT` (training batches without a cache): shared prefixes, see `attention`.

        A MoE model with `moe.aux_loss_coef > 0` adds coef x the load-balancing loss to the
        gradient (`moe.add_to_objective`); `return_aux=True` also returns the loss itself.
        """
        cfg = self.config
        T = tokens_BT.shape[1]
        x_BTD = self.embed_tokens(tokens_BT).astype(self.param_dtype)
        graphdef, layer_state = nnx.split(self.layers)
        layers_L = jnp.arange(cfg.first_dense_layers, cfg.num_layers)  # the stack's layer ids

        if cache is None:
            slots_T = jnp.arange(T)
            inputs = self.attention_inputs(
                positions_BT, slots_T, slots_T, segment_ids_BT, segment_ids_BT, branch_ids_BT
            )
            aux = cfg.moe is not None and (return_aux or cfg.moe.aux_loss_coef > 0)
            valid_BT = segment_ids_BT != 0
            for i, dense_block in enumerate(self.dense_layers or ()):
                block_def, block_state = nnx.split(dense_block)

                def apply(x, state, i=i, block_def=block_def):
                    return nnx.merge(block_def, state)(x, *self.layer_inputs(inputs, i))[0]

                x_BTD = (jax.checkpoint(apply) if remat else apply)(x_BTD, block_state)

            def body(x, xs):
                state, layer = xs
                block = nnx.merge(graphdef, state)
                if aux:
                    x, _, stats = block(x, *self.layer_inputs(inputs, layer), valid=valid_BT)
                    return x, stats
                return block(x, *self.layer_inputs(inputs, layer))[0], None

            body = jax.checkpoint(body) if remat else body
            x_BTD, stats = jax.lax.scan(body, x_BTD, (layer_state, layers_L))
            if not aux:
                return self.norm(x_BTD)
            aux_loss = moe_lib.load_balancing_loss(*stats, valid_BT.sum())
            if cfg.moe.aux_loss_coef > 0:
                x_BTD = moe_lib.add_to_objective(x_BTD, cfg.moe.aux_loss_coef * aux_loss)
            return (self.norm(x_BTD), aux_loss) if return_aux else self.norm(x_BTD)

        if branch_ids_BT is not None:
            raise ValueError("branch_ids_BT (shared prefixes) is for training batches, not a KV cache")
        index = cache["index"]
        k_seg_BS = jax.lax.dynamic_update_slice(
            cache["segment_ids"], segment_ids_BT.astype(jnp.int32), (0, index)
        )
        S = k_seg_BS.shape[1]
        inputs = self.attention_inputs(
            positions_BT, index + jnp.arange(T), jnp.arange(S), segment_ids_BT, k_seg_BS
        )
        k_all, v_all = cache["k"], cache["v"]
        for i, dense_block in enumerate(self.dense_layers or ()):
            x_BTD, (k_new, v_new) = dense_block(
                x_BTD, *self.layer_inputs(inputs, i), (k_all[i], v_all[i]), index
            )
            k_all, v_all = k_all.at[i].set(k_new), v_all.at[i].set(v_new)

        def cached_body(carry, xs):
            x, k_all, v_all = carry
            state, layer = xs
            kv = (k_all[layer], v_all[layer])
            block = nnx.merge(graphdef, state)
            x, (k_new, v_new) = block(x, *self.layer_inputs(inputs, layer), kv, index)
            k_all = jax.lax.dynamic_update_index_in_dim(k_all, k_new, layer, 0)
            v_all = jax.lax.dynamic_update_index_in_dim(v_all, v_new, layer, 0)
            return (x, k_all, v_all), None

        (x_BTD, k_all, v_all), _ = jax.lax.scan(cached_body, (x_BTD, k_all, v_all), (layer_state, layers_L))
        new_cache = {"k": k_all, "v": v_all, "segment_ids": k_seg_BS, "index": index + T}
        return self.norm(x_BTD), new_cache

    def unembed(self, h_BTD):
        """Logits [..., V] in float32 for (a chunk of) final hidden states."""
        if self.lm_head is not None:
            logits = self.lm_head(h_BTD)
        else:
            logits = self.embed_tokens.attend(h_BTD)
            if self.lm_head_lora is not None:
                logits = logits + self.lm_head_lora(h_BTD)
        return logits.astype(jnp.float32)

    def logits(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
        """Full logits [B, T, V] (convenience for tests and small inputs)."""
        if positions_BT is None:
            positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones_like(tokens_BT)
        return self.unembed(self(tokens_BT, positions_BT, segment_ids_BT))


def _scaled(cos_sin, scaling):
    """YaRN multiplies cos and sin by its attention factor; the other rope types leave them."""
    factor = attention_factor(scaling)
    return cos_sin if factor == 1.0 else tuple(c * factor for c in cos_sin)


def cache_dims(cfg: ModelConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """(heads, width) of a layer's two cache arrays: keys and values, or with latent attention
    the kv latent and the rope key, one head each (`mla.py`)."""
    if cfg.mla is not None:
        return (1, cfg.mla.kv_lora_rank), (1, cfg.mla.qk_rope_head_dim)
    return (cfg.num_kv_heads, cfg.head_dim), (cfg.num_kv_heads, cfg.head_dim)


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    k_dims, v_dims = cache_dims(cfg)
    return {
        "k": jnp.zeros((cfg.num_layers, batch, max_len, *k_dims), dtype),
        "v": jnp.zeros((cfg.num_layers, batch, max_len, *v_dims), dtype),
        "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }
