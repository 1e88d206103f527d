"""Per-expert HF tensors <-> the stacked expert kernels of `moe.GroupedLinear`.

HF checkpoints store expert e of layer i as `model.layers.{i}.mlp.experts.{e}.{proj}.weight`
([out, in]). Our kernel of that projection is one [E, in, out] array per layer, which the
parameter map (`params.hf_names`) names `model.layers.{i}.mlp.experts.{proj}.weight` and,
being a kernel, expects transposed: all axes reversed, [out, in, E]. `ExpertSource` wraps a
weight source and presents each layer's experts as that one virtual tensor; `split_experts`
turns exported virtual tensors back into per-expert HF tensors.
"""

from __future__ import annotations

import re

import numpy as np

_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")
_FUSED = re.compile(r"^(.*\.experts)\.(\w+)\.weight$")


class ExpertSource:
    """A weight source (`names`, `shape`, `get`) with per-expert tensors stacked per layer."""

    def __init__(self, source, num_experts: int):
        self.source, self.E = source, num_experts
        self.folder = getattr(source, "folder", None) or getattr(source, "path", None)
        self._parts: dict[str, list[str]] = {}
        self._plain: list[str] = []
        for name in source.names():
            m = _EXPERT.match(name)
            if m is None:
                self._plain.append(name)
                continue
            prefix, e, proj = m.group(1), int(m.group(2)), m.group(3)
            parts = self._parts.setdefault(f"{prefix}.{proj}.weight", [None] * num_experts)
            if e >= num_experts:
                raise_unexpected(self, name)
            parts[e] = name

    def names(self) -> list[str]:
        return self._plain + list(self._parts)

    def _members(self, name: str) -> list[str]:
        parts = self._parts[name]
        missing = [e for e, p in enumerate(parts) if p is None]
        if missing:
            from jaxcook.models.safetensors_source import WeightsError

            raise WeightsError(f"missing tensor for expert {missing[0]} of {name} in {self.folder}")
        return parts

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._parts:
            return tuple(self.source.shape(name))
        return (*self.source.shape(self._members(name)[0]), self.E)  # [out, in, E]

    def get(self, name: str) -> np.ndarray:
        if name not in self._parts:
            return self.source.get(name)
        return np.stack([self.source.get(p) for p in self._members(name)], axis=-1)


def raise_unexpected(source: ExpertSource, name: str):
    from jaxcook.models.safetensors_source import WeightsError

    raise WeightsError(f"unexpected tensor {name} (the config has {source.E} experts) in {source.folder}")


def split_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Virtual [out, in, E] expert tensors -> one [out, in] tensor per expert, HF names."""
    out = {}
    for name, w in tensors.items():
        m = _FUSED.match(name)
        if m is None or w.ndim != 3:
            out[name] = w
            continue
        for e in range(w.shape[-1]):
            out[f"{m.group(1)}.{e}.{m.group(2)}.weight"] = np.ascontiguousarray(w[..., e])
    return out


def wrap_source(cfg, source):
    """The weight source as the parameter map names it, for the config's family."""
    if cfg.model_type == "gpt_oss":
        from jaxcook.models.gpt_oss import GptOssSource

        return GptOssSource(source)
    if cfg.moe is not None and cfg.moe.style == "deepseek_v3":
        from jaxcook.models.deepseek import DeepseekSource

        return DeepseekSource(source, cfg)
    if cfg.moe is not None:
        return ExpertSource(source, cfg.moe.num_experts)
    return source


def to_hf_layout(cfg, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exported tensors (parameter-map names) in the family's checkpoint names."""
    if cfg.model_type == "gpt_oss":
        from jaxcook.models.gpt_oss import to_hf_names

        return to_hf_names(tensors)
    if cfg.moe is not None and cfg.moe.style == "deepseek_v3":
        from jaxcook.models.deepseek import to_hf_names

        return to_hf_names(tensors)
    return split_experts(tensors) if cfg.moe is not None else tensors
