"""GPT-OSS's own layers: its sparse MLP, attention sinks, and its checkpoint tensor names.

MLP (HF `GptOssMLP`):

    logits_NE = x @ router + b                      w_NK, idx_NK = softmax(top_k(logits_NE))
    gate, up = (x @ gate_up[e] + c[e])[..., ::2], [..., 1::2]          (interleaved columns)
    glu = min(gate, limit) * sigmoid(alpha * min(gate, limit))
    y_N = sum_k w_NK * (((clip(up, -limit, limit) + 1) * glu) @ down[e] + d[e])

Checkpoints store the experts fused and [in, out]: `mlp.experts.gate_up_proj` [E, D, 2F],
`..._bias` [E, 2F], `mlp.experts.down_proj` [E, F, D], and the sinks as `self_attn.sinks` [H].
`GptOssSource` presents them under the names the parameter map expects (`...gate_up_proj.weight`
as the transposed kernel [2F, D, E], `...gate_up_proj.bias`, `self_attn.sinks.weight`);
`to_hf_names` undoes it on export (unquantised). MXFP4 experts (`*_blocks`, `*_scales`, as
OpenAI ships them) are dequantised on read (`mxfp4.py`).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcook.models import expert_parallel, grouped, mxfp4
from jaxcook.models.config import MoeConfig
from jaxcook.models.layers import Linear, param
from jaxcook.models.moe import GroupedLinear, router_stats


class Sinks(nnx.Module):
    def __init__(self, heads: int, *, param_dtype):
        self.weight = param(jnp.zeros((heads,), param_dtype), ("heads",))

    def __call__(self):
        return self.weight[...]


class BiasedGroupedLinear(GroupedLinear):
    """A `GroupedLinear` plus a bias per expert ([E, out]), added to each row of its blocks."""

    def __init__(self, experts: int, in_features: int, out_features: int, *, param_dtype, **kw):
        super().__init__(experts, in_features, out_features, param_dtype=param_dtype, **kw)
        self.bias = param(jnp.zeros((experts, out_features), param_dtype), ("expert", kw["axes"][1]))

    def __call__(self, x_GBI, d: grouped.Dispatch, impl: str = "blocks"):
        y = super().__call__(x_GBI, d, impl)
        if impl == "ragged":  # expert of each row, from the padded group sizes
            G, B = x_GBI.shape[:2]
            rows = jnp.arange(G * B)
            expert_R = jnp.minimum(
                jnp.searchsorted(jnp.cumsum(d.group_sizes_E), rows, side="right"),
                d.group_sizes_E.shape[0] - 1,
            )
            return y + self.bias[...].astype(y.dtype)[expert_R].reshape(G, B, -1)
        return y + self.bias[...].astype(y.dtype)[d.block_expert_G][:, None, :]


class Experts(nnx.Module):
    def __init__(self, moe: MoeConfig, hidden: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        E, D, F = moe.num_experts, hidden, moe.intermediate_size
        common = dict(lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs)
        self.gate_up_proj = BiasedGroupedLinear(E, D, 2 * F, axes=("embed", "mlp"), **common)
        self.down_proj = BiasedGroupedLinear(E, F, D, axes=("mlp", "embed"), **common)
        self.alpha, self.limit = moe.swiglu_alpha, moe.swiglu_limit

    def __call__(self, x_GBD, d: grouped.Dispatch, impl: str = "blocks"):
        gate_up = self.gate_up_proj(x_GBD, d, impl)
        gate = jnp.minimum(gate_up[..., ::2], self.limit)
        up = jnp.clip(gate_up[..., 1::2], -self.limit, self.limit)
        return self.down_proj((up + 1) * gate * jax.nn.sigmoid(gate * self.alpha), d, impl)


class GptOssMoE(nnx.Module):
    """HF `GptOssMLP`: `router` (with bias) and `experts`."""

    def __init__(self, moe: MoeConfig, hidden: int, *, lora_rank: int, lora_alpha, param_dtype, rngs):
        self.moe = moe
        self.router = Linear(
            hidden, moe.num_experts, axes=("embed", None), use_bias=True, param_dtype=param_dtype, rngs=rngs
        )
        self.experts = Experts(
            moe, hidden, lora_rank=lora_rank, lora_alpha=lora_alpha, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x_BTD, valid_BT=None, impl: str = "blocks"):
        B, T, D = x_BTD.shape
        x_ND = x_BTD.reshape(B * T, D)
        logits_NE = self.router(x_ND)
        top_NK, idx_NK = jax.lax.top_k(logits_NE, self.moe.top_k)
        w_NK = jax.nn.softmax(top_NK.astype(jnp.float32), axis=-1).astype(x_ND.dtype)
        y_ND = expert_parallel.routed(self.experts, x_ND, w_NK, idx_NK, self.moe.num_experts, impl)
        y_BTD = y_ND.reshape(B, T, D)
        if valid_BT is None:
            return y_BTD
        probs_NE = jax.nn.softmax(logits_NE.astype(jnp.float32), axis=-1)
        return y_BTD, router_stats(idx_NK, probs_NE, valid_BT.reshape(B * T))


_FUSED = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
_FUSED_BIAS = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)_bias$")
_SINKS = re.compile(r"^(.*\.self_attn)\.sinks$")


def _ours(hf: str) -> tuple[str, bool]:
    """(our virtual name, whether the tensor is transposed) of an HF tensor name."""
    if m := _FUSED.match(hf):
        return f"{m.group(1)}.{m.group(2)}.weight", True
    if m := _FUSED_BIAS.match(hf):
        return f"{m.group(1)}.{m.group(2)}.bias", False
    if m := _SINKS.match(hf):
        return f"{m.group(1)}.sinks.weight", False
    return hf, False


class GptOssSource:
    """A weight source in HF GPT-OSS names, seen in the parameter map's names."""

    def __init__(self, source):
        from jaxcook.models.safetensors_source import WeightsError

        self.source = source
        self.folder = getattr(source, "folder", None) or getattr(source, "path", None)
        self._mxfp4: set[str] = set()
        self._hf: dict[str, tuple[str, bool]] = {}
        names = set(source.names())
        for name in sorted(names):
            if name.endswith("_scales"):
                continue
            if name.endswith("_blocks"):  # MXFP4: dequantised on read
                base = name[: -len("_blocks")]
                if f"{base}_scales" not in names:
                    raise WeightsError(f"{self.folder}: {name} has no {base}_scales")
                ours, _ = _ours(base)
                self._hf[ours] = (base, True)
                self._mxfp4.add(base)
                continue
            ours, transposed = _ours(name)
            self._hf[ours] = (name, transposed)

    def names(self) -> list[str]:
        return list(self._hf)

    def shape(self, name: str) -> tuple[int, ...]:
        hf, transposed = self._hf[name]
        if hf in self._mxfp4:  # blocks [E, R, G, 16] -> [E, G*32, R]
            *lead, R, G, B = self.source.shape(f"{hf}_blocks")
            shape = (*lead, G * B * 2, R)
        else:
            shape = tuple(self.source.shape(hf))
        return tuple(reversed(shape)) if transposed else shape

    def get(self, name: str) -> np.ndarray:
        hf, transposed = self._hf[name]
        if hf in self._mxfp4:
            w = mxfp4.dequantize(self.source.get(f"{hf}_blocks"), self.source.get(f"{hf}_scales"))
        else:
            w = self.source.get(hf)
        return w.T if transposed else w


def to_hf_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exported tensors in the parameter map's names -> GPT-OSS checkpoint names."""
    out = {}
    for name, w in tensors.items():
        if name.endswith(".mlp.experts.gate_up_proj.weight") or name.endswith(
            ".mlp.experts.down_proj.weight"
        ):
            out[name[: -len(".weight")]] = np.ascontiguousarray(w.T)
        elif name.endswith(".mlp.experts.gate_up_proj.bias") or name.endswith(".mlp.experts.down_proj.bias"):
            out[name[: -len(".bias")] + "_bias"] = w
        elif name.endswith(".self_attn.sinks.weight"):
            out[name[: -len(".weight")]] = w
        else:
            out[name] = w
    return out
