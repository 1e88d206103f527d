"""Conversation -> `Datum`: render, right-truncate, shift, normalise the loss weights.

The renderer gives the tokens of the whole conversation and a weight per token (1 on what the
model should learn to write). A datum is the shifted pair, `input = seq[:-1]`,
`target_tokens = seq[1:]`, `weights = weights[1:]` (the first token is never a target).

- Truncation: a sequence longer than `max_length` tokens is cut on the right to its first
  `max_length` tokens (so the datum has `max_length - 1` targets); with `too_long="drop"` it is
  refused instead (`ExampleTooLongError`).
- Reduction: losses are sums over tokens (as in Tinker), so `reduction="mean"` divides an
  example's weights by their sum: each example then adds its token-mean NLL to the batch loss,
  whatever its length. `reduction="none"` keeps the 0/1 weights (a token-sum).
- An example in which no target would be trained (no assistant turn under an assistant-only
  `TrainOnWhat`, or every trained token cut off by truncation) is an `UntrainableExampleError`.

`DatumConverter` applies these rules to a stream of records under the user's policies (raise,
or skip and count) and keeps the counts for the workflow to log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jaxcook.data.errors import DataFormatError, ExampleTooLongError, UntrainableExampleError
from jaxcook.data.messages import parse_conversation
from jaxcook.renderers import Message, Renderer, RendererError, TrainOnWhat
from jaxcook.types import Datum, ModelInput, datum_from_tokens_weights

Reduction = Literal["mean", "none"]
TooLong = Literal["truncate", "drop"]
OnBad = Literal["raise", "skip"]


def datum_from_model_input_weights(
    model_input: ModelInput,
    weights_T: Sequence[float] | np.ndarray,
    *,
    max_length: int | None = None,
    reduction: Reduction = "mean",
    where: str = "example",
) -> Datum:
    """Right-truncate the full sequence to `max_length` tokens, shift, and reduce the weights."""
    tokens = model_input.to_ints()
    weights_T = np.asarray(weights_T, np.float32)
    if weights_T.shape != (len(tokens),):
        raise ValueError(f"{where}: weights have shape {weights_T.shape}; expected ({len(tokens)},)")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    truncated = max_length is not None and len(tokens) > max_length
    if truncated:
        tokens, weights_T = tokens[:max_length], weights_T[:max_length]
    if len(tokens) < 2:
        raise UntrainableExampleError(f"{where}: {len(tokens)} token(s); a datum needs at least 2")
    total = float(weights_T[1:].sum())
    if not total > 0:
        cut = f" after right-truncation to max_length={max_length}" if truncated else ""
        raise UntrainableExampleError(f"{where}: no target token has a positive weight{cut}")
    if reduction == "mean":
        weights_T = np.concatenate([weights_T[:1], weights_T[1:] / np.float32(total)])
    return datum_from_tokens_weights(tokens, weights_T)


def conversation_to_datum(
    messages: Sequence[Message],
    renderer: Renderer,
    *,
    max_length: int | None,
    train_on_what: TrainOnWhat | str = TrainOnWhat.ALL_ASSISTANT_MESSAGES,
    reduction: Reduction = "mean",
    too_long: TooLong = "truncate",
    where: str = "conversation",
) -> Datum:
    """One supervised datum from a conversation (see the module docstring for the rules)."""
    model_input, weights_T = render_supervised(messages, renderer, train_on_what, where=where)
    return _to_datum(model_input, weights_T, max_length, reduction, too_long, where)


def render_supervised(
    messages: Sequence[Message], renderer: Renderer, train_on_what: TrainOnWhat | str, *, where: str
) -> tuple[ModelInput, np.ndarray]:
    """`renderer.build_supervised_example`, with errors that name the example and say what is wrong."""
    train_on_what = TrainOnWhat(train_on_what)
    _check_trainable(messages, train_on_what, where)
    try:
        return renderer.build_supervised_example(messages, train_on_what)
    except RendererError as e:
        raise DataFormatError(f"{where}: {e}") from e


def _to_datum(model_input, weights_T, max_length, reduction, too_long, where) -> Datum:
    if too_long not in ("truncate", "drop"):
        raise ValueError(f"too_long must be 'truncate' or 'drop', got {too_long!r}")
    if too_long == "drop" and max_length is not None and model_input.length > max_length:
        raise ExampleTooLongError(f"{where}: {model_input.length} tokens > max_length={max_length}")
    return datum_from_model_input_weights(
        model_input, weights_T, max_length=max_length, reduction=reduction, where=where
    )


def _check_trainable(messages: Sequence[Message], how: TrainOnWhat, where: str) -> None:
    """Refuse, as untrainable rather than malformed, what the assistant-only modes cannot train."""
    roles = [m.get("role") for m in messages]
    if how is TrainOnWhat.LAST_ASSISTANT_MESSAGE and roles[-1:] != ["assistant"]:
        raise UntrainableExampleError(
            f"{where}: train_on_what={how.value} needs a final assistant message; roles are {roles}"
        )
    if how is TrainOnWhat.LAST_ASSISTANT_TURN and "assistant" not in roles[_last_user(roles) + 1 :]:
        raise UntrainableExampleError(
            f"{where}: train_on_what={how.value} needs an assistant message after the last user "
            f"message; roles are {roles}"
        )
    if how is TrainOnWhat.ALL_ASSISTANT_MESSAGES and "assistant" not in roles:
        raise UntrainableExampleError(
            f"{where}: train_on_what={how.value} but the conversation has no assistant message; "
            f"roles are {roles}"
        )


def _last_user(roles: list) -> int:
    return max((i for i, r in enumerate(roles) if r == "user"), default=-1)


@dataclass(frozen=True, kw_only=True)
class DatumPolicy:
    """How records become datums, and what to do with the ones that cannot.

    `on_bad_record`: a record that does not parse or render (missing role, unknown role, ...);
    `on_untrainable`: an example with no trained token. "raise" stops with an error naming the
    record; "skip" drops it and counts it.
    """

    max_length: int | None
    train_on_what: TrainOnWhat = TrainOnWhat.ALL_ASSISTANT_MESSAGES
    reduction: Reduction = "mean"
    too_long: TooLong = "truncate"
    on_bad_record: OnBad = "raise"
    on_untrainable: OnBad = "raise"

    def __post_init__(self):
        object.__setattr__(self, "train_on_what", TrainOnWhat(self.train_on_what))
        for name, allowed in (
            ("reduction", ("mean", "none")),
            ("too_long", ("truncate", "drop")),
            ("on_bad_record", ("raise", "skip")),
            ("on_untrainable", ("raise", "skip")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DatumPolicy.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"DatumPolicy.max_length must be >= 2 or None, got {self.max_length}")


class DatumConverter:
    """Records `(where, raw messages)` -> datums under a `DatumPolicy`, counting what it changed.

    `counts` (keys `data/...`): `truncated`, `dropped_too_long`, `skipped_untrainable`,
    `skipped_bad_record`, and `datums` produced.
    """

    def __init__(self, renderer: Renderer, policy: DatumPolicy):
        self.renderer, self.policy = renderer, policy
        self.counts: Counter[str] = Counter()

    def __call__(self, where: str, raw_messages: Any) -> Datum | None:
        p = self.policy
        try:
            messages = parse_conversation(raw_messages, where)
            model_input, weights_T = render_supervised(messages, self.renderer, p.train_on_what, where=where)
            datum = _to_datum(model_input, weights_T, p.max_length, p.reduction, p.too_long, where)
        except DataFormatError:
            if p.on_bad_record == "raise":
                raise
            self.counts["data/skipped_bad_record"] += 1
            return None
        except UntrainableExampleError:
            if p.on_untrainable == "raise":
                raise
            self.counts["data/skipped_untrainable"] += 1
            return None
        except ExampleTooLongError:
            self.counts["data/dropped_too_long"] += 1
            return None
        if p.max_length is not None and model_input.length > p.max_length:
            self.counts["data/truncated"] += 1
        self.counts["data/datums"] += 1
        return datum

    def convert_all(self, rows: Sequence[tuple[str, Any]]) -> list[Datum]:
        return [d for d in (self(where, raw) for where, raw in rows) if d is not None]
