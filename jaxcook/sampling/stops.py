"""Stop conditions: what `SamplingParams.stop` means, and the exact host-side stop-string cut.

Semantics (Tinker's, `SamplingParams.stop`):
- `None`: stop at the end-of-sequence token(s) (the tokenizer's `eos_token_id` and the model
  config's `eos_token_id`).
- a list of token ids: stop at any of them, and at EOS.
- a string or a list of strings: stop when the decoded completion contains one of them, and
  at EOS.
- `[]`: never stop early (EOS included); generation runs to `max_tokens`.

The stopping token is included in the returned tokens (and its log-probability), as Tinker
returns it and as the renderers' `parse_response` expects (`...<|im_end|>`, `...\\n\\nUser:`).
For a stop string, the completion ends at the first token whose addition makes the decoded
completion contain the string (the string may end inside that token; nothing after it is
returned). On device, the loop stops early when the last tokens equal a stop string's own
tokenisation; the host then finds the exact cut on the decoded text, which also catches a stop
string the model spelled with other tokens (there the loop ran on, and the extra tokens are
dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StopSpec:
    tokens: tuple[int, ...]  # stop token ids (EOS included unless stop == [])
    strings: tuple[str, ...]  # stop strings, checked exactly on the decoded text
    sequences: tuple[tuple[int, ...], ...]  # each string's tokenisation (the device-side check)


def eos_ids(tokenizer, config) -> tuple[int, ...]:
    """The end-of-sequence ids of a model: its tokenizer's and its config's."""
    ids = set()
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = getattr(config, "eos_token_id", None)
    if eos is not None:
        ids.update(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))
    return tuple(sorted(ids))


def resolve_stop(stop, *, eos: Sequence[int], vocab_size: int, encode: Callable | None) -> StopSpec:
    """The stop condition of `SamplingParams.stop` (see the module docstring)."""
    if stop is None:
        return StopSpec(tuple(eos), (), ())
    if isinstance(stop, str):
        stop = [stop]
    stop = list(stop)
    if not stop:
        return StopSpec((), (), ())
    if all(isinstance(s, str) for s in stop):
        if any(s == "" for s in stop):
            raise ValueError("SamplingParams.stop: an empty stop string would stop before any token")
        if encode is None:
            raise ValueError("SamplingParams.stop: stop strings need a tokenizer (this sampler has none)")
        sequences = tuple(tuple(int(t) for t in encode(s)) for s in stop)
        return StopSpec(tuple(eos), tuple(stop), tuple(s for s in sequences if s))
    if all(isinstance(s, int) and not isinstance(s, bool) for s in stop):
        bad = [s for s in stop if not 0 <= s < vocab_size]
        if bad:
            raise ValueError(
                f"SamplingParams.stop: token ids {bad} are outside the vocabulary [0, {vocab_size})"
            )
        return StopSpec(tuple(sorted(set(stop) | set(eos))), (), ())
    raise TypeError(
        f"SamplingParams.stop must be None, a string, a list of strings or a list of token ids; got {stop!r}"
    )


def cut_at_stop_string(tokens: Sequence[int], strings: Sequence[str], decode: Callable) -> int | None:
    """Length of the shortest prefix of `tokens` whose decoded text contains a stop string, or
    None if the whole completion contains none. Containment only grows with the prefix, so a
    bisection needs O(log n) decodes."""
    if not strings or not tokens:
        return None

    def contains(n: int) -> bool:
        text = decode(list(tokens[:n]))
        return any(s in text for s in strings)

    if not contains(len(tokens)):
        return None
    lo, hi = 0, len(tokens)  # contains(lo) is false (empty text), contains(hi) is true
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if contains(mid) else (mid, hi)
    return hi
