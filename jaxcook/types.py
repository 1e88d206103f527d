"""The data contract shared by every layer: model inputs, datums and the Tinker-style parameters.

A `Datum` is `model_input` (token chunks) plus `loss_fn_inputs` (named per-token arrays).
Position i of the input predicts token i+1: `input = seq[:-1]`, `target_tokens = seq[1:]`, and
every per-token input (`weights`, `logprobs`, `advantages`, ...) is aligned with the targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# Tinker's dtype map for loss inputs: token ids are integers, everything else float32.
_INT_KEYS = frozenset({"target_tokens"})


@dataclass(frozen=True)
class EncodedTextChunk:
    """A run of token ids."""

    tokens: tuple[int, ...]

    def __init__(self, tokens: Sequence[int]):
        object.__setattr__(self, "tokens", tuple(int(t) for t in tokens))

    @property
    def length(self) -> int:
        return len(self.tokens)


ModelInputChunk = EncodedTextChunk


@dataclass(frozen=True)
class ModelInput:
    """A sequence of chunks; immutable, so appending returns a new `ModelInput`."""

    chunks: tuple[ModelInputChunk, ...] = ()

    def __init__(self, chunks: Sequence[ModelInputChunk] = ()):
        object.__setattr__(self, "chunks", tuple(chunks))

    @classmethod
    def from_ints(cls, tokens: Sequence[int]) -> ModelInput:
        return cls([EncodedTextChunk(tokens)]) if len(tokens) else cls()

    @classmethod
    def empty(cls) -> ModelInput:
        return cls()

    def to_ints(self) -> list[int]:
        return [t for chunk in self.chunks for t in chunk.tokens]

    @property
    def length(self) -> int:
        return sum(c.length for c in self.chunks)

    def append(self, chunk: ModelInputChunk) -> ModelInput:
        return ModelInput([*self.chunks, chunk])

    def append_int(self, token: int) -> ModelInput:
        return self.append(EncodedTextChunk([token]))

    def extend(self, tokens: Sequence[int]) -> ModelInput:
        return self.append(EncodedTextChunk(tokens)) if len(tokens) else self


def _as_array(key: str, value) -> np.ndarray:
    dtype = np.int32 if key in _INT_KEYS else np.float32
    arr = np.asarray(value)
    if key in _INT_KEYS and arr.dtype.kind == "f":
        raise TypeError(f"loss_fn_inputs[{key!r}] must hold integers, got {arr.dtype}")
    return arr.astype(dtype, copy=False)


@dataclass(frozen=True)
class Datum:
    """One training example: `model_input` (length N) and per-token loss inputs (length N)."""

    model_input: ModelInput
    loss_fn_inputs: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n = self.model_input.length
        converted = {}
        for key, value in self.loss_fn_inputs.items():
            arr = _as_array(key, value)
            if arr.ndim == 0 or arr.shape[0] != n:
                raise ValueError(
                    f"loss_fn_inputs[{key!r}] has shape {arr.shape}; expected leading dim {n} "
                    "(the model_input length: targets are aligned to seq[1:])"
                )
            converted[key] = arr
        object.__setattr__(self, "loss_fn_inputs", converted)

    @property
    def length(self) -> int:
        return self.model_input.length


def datum_from_tokens_weights(tokens: Sequence[int], weights: Sequence[float], **extra) -> Datum:
    """Build a datum from a full sequence and per-token weights over that same sequence.

    Applies the shift: input = tokens[:-1]; target_tokens = tokens[1:]; weights = weights[1:].
    `extra` arrays are given over the full sequence too and shifted the same way.
    """
    tokens = list(tokens)
    if len(tokens) < 2:
        raise ValueError(f"a datum needs at least 2 tokens, got {len(tokens)}")
    if len(weights) != len(tokens):
        raise ValueError(f"weights has length {len(weights)}, tokens {len(tokens)}")
    inputs = {"target_tokens": tokens[1:], "weights": np.asarray(weights, np.float32)[1:]}
    inputs.update({k: np.asarray(v)[1:] for k, v in extra.items()})
    return Datum(ModelInput.from_ints(tokens[:-1]), inputs)


@dataclass(frozen=True, kw_only=True)
class AdamParams:
    """Tinker's optimizer step parameters (decoupled weight decay as torch AdamW)."""

    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 = off


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Tinker's sampling parameters. `stop=None` means the tokenizer's EOS; `[]` disables stopping."""

    max_tokens: int | None = None
    seed: int | None = None
    stop: str | Sequence[str] | Sequence[int] | None = None
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0


StopReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SampledSequence:
    tokens: list[int]
    logprobs: list[float]
    stop_reason: StopReason


@dataclass(frozen=True)
class SampleResponse:
    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None


@dataclass(frozen=True)
class ForwardBackwardOutput:
    """Per-datum outputs (`logprobs` of the targets under the current weights) and summed metrics.

    `logprobs` are computed at the positions the loss reads (`core.losses.positions_read`: nonzero
    `weights` for `cross_entropy` and `dpo`; nonzero `advantages`, `logprobs` or `mask` for the RL
    losses) and may be 0 elsewhere; pass weights of 1 where you want a log-prob (or build the
    client with `BucketConfig(score_fractions=())` to get every position).
    """

    loss_fn_outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]
