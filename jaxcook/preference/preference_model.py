"""Preference models: a comparison in, a preference in [-1, 1] out (-1: A is better, +1: B is better).

Two ways to ask a reward model trained on `ComparisonRenderer` datums:

- `LogprobPreferenceModel` reads the next-token log-probabilities of the verdict tokens ("A",
  "B", and the first token of "Tie") after the reward-model prompt, renormalises them over those
  candidates, and returns `P(B) - P(A)`: the expected value of the verdict's score (A -> -1,
  Tie -> 0, B -> +1) under the model restricted to its verdicts. It uses the whole distribution,
  so a 0.6 / 0.4 model says 0.2 where one sampled token says +-1. `mode="argmax"` returns the
  score of the most likely verdict instead (what sampling one token at temperature 0 gives).
- `CompleterPreferenceModel` asks a `MessageCompleter` (tinker-cookbook's way: sample one token
  at temperature 0) and maps its text with `label_to_preference`.

The sampler port a `LogprobPreferenceModel` needs is `NextTokenScorer`. A Tinker-style
`compute_logprobs(model_input) -> list[float | None]` (prompt log-probabilities, entry 0 None)
is adapted by `NextTokenScorerFromPromptLogprobs`, one call per candidate.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from jaxcook.ports import MessageCompleter
from jaxcook.preference.reward_model import ComparisonRenderer
from jaxcook.preference.types import Comparison
from jaxcook.renderers import get_text_content
from jaxcook.types import ModelInput

LABEL_SCORES = {"A": -1.0, "B": 1.0, "Tie": 0.0}


@runtime_checkable
class PreferenceModel(Protocol):
    """`await pm(comparison)`: -1 = A strongly preferred, 0 = tie, +1 = B strongly preferred."""

    async def __call__(self, comparison: Comparison) -> float: ...


@runtime_checkable
class NextTokenScorer(Protocol):
    """Log-probabilities of candidate next tokens after `model_input` (one per candidate, same order).

    They are log p(token | model_input) under the full vocabulary softmax (not renormalised over
    the candidates), at temperature 1.
    """

    async def next_token_logprobs(
        self, model_input: ModelInput, candidate_token_ids: Sequence[int]
    ) -> list[float]: ...


class NextTokenScorerFromPromptLogprobs:
    """A `NextTokenScorer` from `compute_logprobs(model_input) -> [None, lp_1, ..., lp_{n-1}]`.

    Scores `model_input + [candidate]` and reads the last entry, one call per candidate (issued
    concurrently, so a batching sampler can serve them together).
    """

    def __init__(self, compute_logprobs: Callable[[ModelInput], Awaitable[Sequence[float | None]]]):
        self.compute_logprobs = compute_logprobs

    async def next_token_logprobs(self, model_input: ModelInput, candidate_token_ids: Sequence[int]):
        results = await asyncio.gather(
            *(self.compute_logprobs(model_input.append_int(int(t))) for t in candidate_token_ids)
        )
        out = []
        for t, lps in zip(candidate_token_ids, results, strict=True):
            if not lps or lps[-1] is None:
                raise ValueError(f"compute_logprobs returned no log-probability for candidate token {t}")
            out.append(float(lps[-1]))
        return out


def preference_from_logprobs(
    logprob_A: float, logprob_B: float, logprob_tie: float | None = None, *, mode: str = "expected"
) -> float:
    """`P(B) - P(A)` renormalised over the candidates ("expected"), or the argmax's score."""
    names = ["A", "B"] + (["Tie"] if logprob_tie is not None else [])
    lp = np.array([logprob_A, logprob_B] + ([logprob_tie] if logprob_tie is not None else []), np.float64)
    if not np.all(np.isfinite(lp) | (lp == -np.inf)) or np.all(lp == -np.inf):
        raise ValueError(f"verdict log-probabilities must be finite or -inf, not all -inf: {lp.tolist()}")
    if mode == "argmax":
        best = np.flatnonzero(lp == lp.max())
        return LABEL_SCORES[names[best[0]]] if len(best) == 1 else 0.0  # an exact tie of verdicts: 0
    if mode != "expected":
        raise ValueError(f"mode must be 'expected' or 'argmax', got {mode!r}")
    p = np.exp(lp - lp.max())
    p /= p.sum()
    return float(p[1] - p[0])


class LogprobPreferenceModel:
    """Preference from the reward model's verdict-token log-probabilities (see the module docstring)."""

    def __init__(
        self,
        comparison_renderer: ComparisonRenderer,
        scorer: NextTokenScorer,
        *,
        mode: Literal["expected", "argmax"] = "expected",
        include_tie: bool = True,
    ):
        if mode not in ("expected", "argmax"):
            raise ValueError(f"mode must be 'expected' or 'argmax', got {mode!r}")
        self.comparison_renderer, self.scorer = comparison_renderer, scorer
        self.mode, self.include_tie = mode, include_tie

    def candidate_token_ids(self) -> list[int]:
        ids = self.comparison_renderer.label_token_ids
        return [ids["A"], ids["B"]] + ([ids["Tie"]] if self.include_tie else [])

    async def __call__(self, comparison: Comparison) -> float:
        prompt = self.comparison_renderer.build_generation_prompt(comparison)
        candidates = self.candidate_token_ids()
        lp = await self.scorer.next_token_logprobs(prompt, candidates)
        if len(lp) != len(candidates):
            raise ValueError(f"scorer returned {len(lp)} log-probabilities for {len(candidates)} candidates")
        return preference_from_logprobs(*lp, mode=self.mode)


def label_to_preference(text: str, tie_texts: Sequence[str] = ("Tie",)) -> float | None:
    """ "A" -> -1, "B" -> +1, a tie text -> 0 (surrounding spaces ignored); anything else -> None."""
    text = text.strip()
    if text in ("A", "B"):
        return LABEL_SCORES[text]
    return 0.0 if text in tie_texts else None


class CompleterPreferenceModel:
    """Preference from a `MessageCompleter`'s verdict (configure it for 1 token at temperature 0).

    An answer that is not a verdict counts as a tie (0) and in `counts["invalid"]`, as
    tinker-cookbook does; `counts` also holds how often each verdict was given.
    """

    def __init__(self, comparison_renderer: ComparisonRenderer, completer: MessageCompleter):
        self.comparison_renderer, self.completer = comparison_renderer, completer
        tie_first = comparison_renderer.renderer.decode([comparison_renderer.label_token_ids["Tie"]])
        self.tie_texts = ("Tie", tie_first.strip())  # a 1-token answer holds only the first token
        self.counts: Counter[str] = Counter()

    async def __call__(self, comparison: Comparison) -> float:
        message = await self.completer(self.comparison_renderer.to_messages(comparison))
        score = label_to_preference(get_text_content(message), self.tie_texts)
        if score is None:
            self.counts["invalid"] += 1
            return 0.0
        self.counts[{-1.0: "A", 1.0: "B", 0.0: "Tie"}[score]] += 1
        return score
