"""GGUF files as a lazy source of HF-named tensors plus an HF-style config.

llama.cpp names and lays out each architecture its own way (its `convert_hf_to_gguf.py`):
`gguf_dense.py` reads `llama` (which Mistral checkpoints convert to), `qwen2`, `qwen3`,
`qwen3moe` and `gemma3`; `gguf_moe.py` reads `gpt-oss` and `deepseek2` (DeepSeek V3, Kimi K2).
Each `GGUFArch` turns the metadata into an HF `config.json` dict (read by the same strict
readers as a checkpoint's) and the tensors into HF names, undoing the converter's changes (q/k
row permutations, Gemma's norm + 1, split or stacked expert tensors). Tensors are dequantised on
access with `gguf.quants.dequantize` (every type it knows, MXFP4 included). A metadata key of the
architecture that the reader does not understand, a missing required key and an unexpected
tensor are errors naming the key (or tensor) and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxcook.models import gguf_dense, gguf_moe
from jaxcook.models.safetensors_source import WeightsError

ARCHS: dict[str, gguf_dense.GGUFArch] = {
    "llama": gguf_dense.LLAMA,
    "qwen2": gguf_dense.QWEN2,
    "qwen3": gguf_dense.QWEN3,
    "qwen3moe": gguf_dense.QWEN3MOE,
    "gemma3": gguf_dense.GEMMA3,
    "gpt-oss": gguf_moe.GPT_OSS,
    "deepseek2": gguf_moe.DEEPSEEK2,
}


class GGUFSource:
    """`names()`, `shape(name)`, `get(name)` in HF names, and `hf_config()` from the metadata."""

    def __init__(self, path: str | Path):
        from gguf import GGUFReader

        self.path = Path(path)
        if not self.path.exists():
            raise WeightsError(f"{self.path}: no such GGUF file")
        try:
            self.reader = GGUFReader(str(self.path))
        except Exception as e:
            raise WeightsError(f"{self.path}: not a readable GGUF file ({e})") from e
        self.arch = self.field("general.architecture")
        if self.arch not in ARCHS:
            raise WeightsError(
                f"{self.path}: unsupported general.architecture {self.arch!r}; supported: {sorted(ARCHS)}"
            )
        self.spec = ARCHS[self.arch]
        prefix = f"{self.arch}."
        for key in self.reader.fields:
            if key.startswith(prefix) and key[len(prefix) :] not in self.spec.keys:
                raise WeightsError(f"{self.path}: unsupported metadata key {key!r}")
        self._raw = {t.name: t for t in self.reader.tensors}
        self._entries = self.spec.tensors(self)

    # -- what the architecture readers use -------------------------------------------------
    def field(self, key: str, default: Any = KeyError) -> Any:
        """The metadata value of `key` (`{arch}` is replaced by the architecture)."""
        key = key.replace("{arch}", getattr(self, "arch", ""))
        field = self.reader.fields.get(key)
        if field is None:
            if default is KeyError:
                raise WeightsError(f"{self.path}: missing metadata field {key!r}")
            return default
        return field.contents()

    def tensor_names(self) -> list[str]:
        return list(self._raw)

    def raw_shape(self, name: str) -> tuple[int, ...]:
        """Numpy shape of a stored tensor (GGUF lists its dimensions innermost first)."""
        return tuple(int(x) for x in reversed(self._raw[name].shape))

    def raw(self, name: str) -> np.ndarray:
        """A stored tensor, dequantised to float32, in its numpy shape."""
        from gguf.quants import dequantize

        t = self._raw[name]
        try:
            w = dequantize(t.data, t.tensor_type)
        except NotImplementedError as e:
            raise WeightsError(f"{self.path}: cannot dequantise {name} ({t.tensor_type.name}): {e}") from e
        return w.astype(np.float32).reshape(self.raw_shape(name))

    def error(self, message: str) -> WeightsError:
        return WeightsError(f"{self.path}: {message}")

    # -- the weight-source interface -------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def get(self, name: str) -> np.ndarray:
        return self._entries[name].read()

    def hf_config(self) -> dict[str, Any]:
        return {"model_type": self.spec.model_type, **self.spec.config(self)}
