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
  `TrainOnWhat`, or every trained token cut off by truncation) is an `UntrainableExampleError`
  (`TruncatedAwayError` for the second).

`DatumConverter` applies these rules to a stream of records under the user's policies (raise,
or skip and count) and keeps the counts for the workflow to log (per step, see
`jaxcook.data.accounting`). Whatever the policy, an example that truncation leaves without a
trained token is skipped and counted, never trained on nor fatal: it is the data's length, not
its format, that is at fault. The first few examples of each kind are logged with their
`where` (file:line, dataset row), so a silent loss of trained tokens shows in `logs.log`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jaxcook.data.errors import (
    DataFormatError,
    ExampleTooLongError,
    TruncatedAwayError,
    UntrainableExampleError,
)
from jaxcook.data.messages import parse_conversation
from jaxcook.renderers import Message, Renderer, RendererError, TrainOnWhat
from jaxcook.types import Datum, ModelInput, datum_from_tokens_weights

log = logging.getLogger(__name__)

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
    if not total > 0 and truncated:
        raise TruncatedAwayError(
            f"{where}: no target token has a positive weight after right-truncation to "
            f"max_length={max_length}"
        )
    if not total > 0:
        raise UntrainableExampleError(f"{where}: no target token has a positive weight")
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

    `counts` (keys `data/...`): `truncated` (kept, cut on the right), `truncated_trained_tokens`
    (trained tokens those cuts removed), `skipped_untrainable` (of which `skipped_truncated_away`:
    truncation removed every trained token), `dropped_too_long`, `skipped_bad_record`, and
    `datums` produced. `examples[kind]` holds the `where` of the first `log_first` of each kind,
    each also logged as a warning.
    """

    def __init__(self, renderer: Renderer, policy: DatumPolicy, *, log_first: int = 5):
        self.renderer, self.policy = renderer, policy
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.log_first = log_first

    def __call__(self, where: str, raw_messages: Any) -> Datum | None:
        p = self.policy
        try:
            messages = parse_conversation(raw_messages, where)
            model_input, weights_T = render_supervised(messages, self.renderer, p.train_on_what, where=where)
            datum = _to_datum(model_input, weights_T, p.max_length, p.reduction, p.too_long, where)
        except DataFormatError as e:
            if p.on_bad_record == "raise":
                raise
            self._note("skipped_bad_record", where, str(e))
            return None
        except TruncatedAwayError as e:
            cut = int(np.count_nonzero(weights_T[p.max_length :]))
            self.counts["data/truncated_trained_tokens"] += cut
            self.counts["data/skipped_untrainable"] += 1
            self._note("skipped_truncated_away", where, f"{e}; skipped ({cut} trained tokens were cut)")
            return None
        except UntrainableExampleError as e:
            if p.on_untrainable == "raise":
                raise
            self._note("skipped_untrainable", where, str(e))
            return None
        except ExampleTooLongError as e:
            self._note("dropped_too_long", where, str(e))
            return None
        if p.max_length is not None and model_input.length > p.max_length:
            cut = int(np.count_nonzero(weights_T[p.max_length :]))
            kept = int(np.count_nonzero(weights_T[1 : p.max_length]))
            self.counts["data/truncated_trained_tokens"] += cut
            self._note(
                "truncated",
                where,
                f"{where}: {model_input.length} tokens cut to max_length={p.max_length} "
                f"({cut} of {cut + kept} trained tokens cut)",
            )
        self.counts["data/datums"] += 1
        return datum

    def _note(self, kind: str, where: str, message: str) -> None:
        self.counts[f"data/{kind}"] += 1
        seen = self.examples.setdefault(kind, [])
        if len(seen) < self.log_first:
            seen.append(where)
            more = f" (further ones are only counted, in data/{kind})" if len(seen) == self.log_first else ""
            log.warning("data %s: %s%s", kind.replace("_", " "), message, more)

    def convert_all(self, rows: Sequence[tuple[str, Any]]) -> list[Datum]:
        return [d for d in (self(where, raw) for where, raw in rows) if d is not None]
