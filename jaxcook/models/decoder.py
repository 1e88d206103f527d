"""The dense decoder (Llama 3.x / Qwen2 / Qwen3 / SmolLM2) as a Flax NNX module.

Layers are stacked (every layer parameter has a leading `layers` axis) and applied with
`lax.scan`, so a 30-layer model compiles one layer body. The forward returns final-norm hidden
states; `unembed` turns (a chunk of) them into logits, so training never has to hold
full-vocabulary logits for a whole batch.

KV cache: `init_cache` returns `{"k", "v": [L, B, S, K, D], "segment_ids": [B, S], "index": ()}`.
A call with a cache writes its T new keys/values at slots `index .. index+T` and attends over
the cache with the same segment rule as training (`attention.attention_mask`). Prefill and
single-step decode are the same call with T = prompt length or 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcook.lora import LoraConfig
from jaxcook.models.attention import attention_mask, gqa_attention
from jaxcook.models.config import ModelConfig
from jaxcook.models.fused import swiglu
from jaxcook.models.layers import Embed, Linear, LoraAdapter, RMSNorm
from jaxcook.models.rope import apply_rope, inverse_frequencies, rope_cos_sin


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora_rank: int, lora_alpha, param_dtype, rngs: nnx.Rngs):
        D, H, K, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(D, H * hd, axes=("embed", "heads"), use_bias=cfg.qkv_bias, **common)
        self.k_proj = Linear(D, K * hd, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **common)
        self.v_proj = Linear(D, K * hd, axes=("embed", "kv_heads"), use_bias=cfg.qkv_bias, **common)
        self.o_proj = Linear(H * hd, D, axes=("heads", "embed"), **common)
        # Qwen3: RMSNorm over head_dim on each query and key head, before RoPE.
        norm = dict(eps=cfg.rms_norm_eps, axis_name=None, param_dtype=param_dtype)
        self.q_norm = RMSNorm(hd, **norm) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, **norm) if cfg.qk_norm else None
        self.shape = (H, K, hd)

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
        out_BTHD = gqa_attention(q_BTHD, k_BTKD.astype(q_BTHD.dtype), v_BTKD.astype(q_BTHD.dtype), mask_BTS)
        return self.o_proj(out_BTHD.reshape(B, T, H * hd)), (k_BTKD, v_BTKD)


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig, *, lora_rank: int, lora_alpha, param_dtype, rngs: nnx.Rngs):
        D, F = cfg.hidden_size, cfg.intermediate_size
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(D, F, axes=("embed", "mlp"), **common)
        self.up_proj = Linear(D, F, axes=("embed", "mlp"), **common)
        self.down_proj = Linear(F, D, axes=("mlp", "embed"), **common)

    def __call__(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, lora: LoraConfig | None, param_dtype, rngs: nnx.Rngs):
        alpha = lora.alpha if lora else None
        attn_rank = lora.rank if lora and lora.train_attn else 0
        mlp_rank = lora.rank if lora and lora.train_mlp else 0
        norm = dict(eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.self_attn = Attention(
            cfg, lora_rank=attn_rank, lora_alpha=alpha, param_dtype=param_dtype, rngs=rngs
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.mlp = MLP(cfg, lora_rank=mlp_rank, lora_alpha=alpha, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache_kv=None, cache_index=None):
        h, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_kv, cache_index)
        x = x + h
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
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, param_dtype=param_dtype, rngs=rngs)

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(rngs):
            return Block(cfg, lora=lora, param_dtype=param_dtype, rngs=rngs)

        self.layers = make_layers(rngs)
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
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

    def __call__(self, tokens_BT, positions_BT, segment_ids_BT, *, cache=None, remat: bool = False):
        """Final-norm hidden states [B, T, D] (and the updated cache when one is given)."""
        cfg = self.config
        T = tokens_BT.shape[1]
        x_BTD = self.embed_tokens(tokens_BT).astype(self.param_dtype)
        cos, sin = rope_cos_sin(
            positions_BT, inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        )
        graphdef, layer_state = nnx.split(self.layers)

        if cache is None:
            slots_T = jnp.arange(T)
            mask_BTS = attention_mask(slots_T, slots_T, segment_ids_BT, segment_ids_BT)

            def body(x, state):
                return nnx.merge(graphdef, state)(x, cos, sin, mask_BTS)[0], None

            body = jax.checkpoint(body) if remat else body
            x_BTD, _ = jax.lax.scan(body, x_BTD, layer_state)
            return self.norm(x_BTD)

        index = cache["index"]
        k_seg_BS = jax.lax.dynamic_update_slice(
            cache["segment_ids"], segment_ids_BT.astype(jnp.int32), (0, index)
        )
        S = k_seg_BS.shape[1]
        mask_BTS = attention_mask(index + jnp.arange(T), jnp.arange(S), segment_ids_BT, k_seg_BS)

        def cached_body(carry, xs):
            x, k_all, v_all = carry
            state, layer = xs
            kv = (k_all[layer], v_all[layer])
            x, (k_new, v_new) = nnx.merge(graphdef, state)(x, cos, sin, mask_BTS, kv, index)
            k_all = jax.lax.dynamic_update_index_in_dim(k_all, k_new, layer, 0)
            v_all = jax.lax.dynamic_update_index_in_dim(v_all, v_new, layer, 0)
            return (x, k_all, v_all), None

        (x_BTD, k_all, v_all), _ = jax.lax.scan(
            cached_body, (x_BTD, cache["k"], cache["v"]), (layer_state, jnp.arange(cfg.num_layers))
        )
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


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> dict:
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    return {
        "k": jnp.zeros(shape, dtype),
        "v": jnp.zeros(shape, dtype),
        "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
    }
