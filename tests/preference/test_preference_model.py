"""Preference models: verdict log-probabilities or a completer's verdict -> a preference in [-1, 1]."""

from __future__ import annotations

import asyncio
import math

import pytest

from jaxcook.preference import (
    ComparisonRenderer,
    CompleterPreferenceModel,
    LogprobPreferenceModel,
    NextTokenScorerFromPromptLogprobs,
    label_to_preference,
    preference_from_logprobs,
)
from tests.preference.helpers import labeled


@pytest.fixture(scope="module")
def comparison_renderer(renderer):
    return ComparisonRenderer(renderer)


def test_preference_from_logprobs_hand_computed():
    ln = math.log
    # P(A), P(B) = 0.6, 0.2 (0.2 left to other tokens): renormalised 0.75, 0.25 -> 0.25 - 0.75 = -0.5.
    assert preference_from_logprobs(ln(0.6), ln(0.2)) == pytest.approx(-0.5)
    # With Tie 0.2: over 1.0 total, P(B) - P(A) = 0.2 - 0.6 = -0.4.
    assert preference_from_logprobs(ln(0.6), ln(0.2), ln(0.2)) == pytest.approx(-0.4)
    # Renormalising makes the scale of the candidates' mass irrelevant: 0.03/0.01 = 0.6/0.2.
    assert preference_from_logprobs(ln(0.03), ln(0.01)) == pytest.approx(-0.5)
    assert preference_from_logprobs(-math.inf, 0.0) == 1.0
    assert preference_from_logprobs(ln(0.6), ln(0.2), ln(0.2), mode="argmax") == -1.0
    assert preference_from_logprobs(ln(0.1), ln(0.3), ln(0.6), mode="argmax") == 0.0  # Tie wins
    assert preference_from_logprobs(ln(0.1), ln(0.6), ln(0.3), mode="argmax") == 1.0
    assert preference_from_logprobs(ln(0.4), ln(0.4), mode="argmax") == 0.0  # exact draw
    with pytest.raises(ValueError, match="finite"):
        preference_from_logprobs(math.nan, 0.0)
    with pytest.raises(ValueError, match="mode"):
        preference_from_logprobs(0.0, 0.0, mode="sample")


class FakeScorer:
    """Returns fixed next-token log-probs per token id; records what it was asked."""

    def __init__(self, table: dict[int, float]):
        self.table, self.calls = table, []

    async def next_token_logprobs(self, model_input, candidate_token_ids):
        self.calls.append((model_input.to_ints(), list(candidate_token_ids)))
        return [self.table[t] for t in candidate_token_ids]


def test_logprob_preference_model_reads_the_verdict_tokens(comparison_renderer):
    ids = comparison_renderer.label_token_ids
    ln = math.log
    scorer = FakeScorer({ids["A"]: ln(0.1), ids["B"]: ln(0.7), ids["Tie"]: ln(0.2)})
    c = labeled(2).comparison
    pm = LogprobPreferenceModel(comparison_renderer, scorer)
    assert asyncio.run(pm(c)) == pytest.approx(0.7 - 0.1)
    prompt, candidates = scorer.calls[0]
    assert prompt == comparison_renderer.build_generation_prompt(c).to_ints()
    assert candidates == [ids["A"], ids["B"], ids["Tie"]]
    no_tie = LogprobPreferenceModel(comparison_renderer, scorer, include_tie=False)
    assert asyncio.run(no_tie(c)) == pytest.approx((0.7 - 0.1) / 0.8)
    assert asyncio.run(LogprobPreferenceModel(comparison_renderer, scorer, mode="argmax")(c)) == 1.0


def test_scorer_from_prompt_logprobs():
    seen = []

    async def compute_logprobs(model_input):  # Tinker style: entry 0 is None
        tokens = model_input.to_ints()
        seen.append(tokens)
        return [None] + [-0.5] * (len(tokens) - 2) + [-float(tokens[-1])]

    from jaxcook.types import ModelInput

    scorer = NextTokenScorerFromPromptLogprobs(compute_logprobs)
    assert asyncio.run(scorer.next_token_logprobs(ModelInput.from_ints([5, 6]), [1, 3])) == [-1.0, -3.0]
    assert sorted(seen) == [[5, 6, 1], [5, 6, 3]]


def test_label_to_preference():
    assert [label_to_preference(t) for t in ("A", " B\n", "Tie", "C", "AB", "")] == [
        -1.0,
        1.0,
        0.0,
        None,
        None,
        None,
    ]
    assert label_to_preference("T", tie_texts=("Tie", "T")) == 0.0


class Verdicts:
    """A MessageCompleter that answers with the next scripted verdict and records the chats."""

    def __init__(self, answers):
        self.answers, self.chats = list(answers), []

    async def __call__(self, messages):
        self.chats.append(messages)
        return {"role": "assistant", "content": self.answers.pop(0)}


def test_completer_preference_model_counts_invalid_answers(comparison_renderer):
    completer = Verdicts(["A", "B", "T", "Tie", "maybe"])
    pm = CompleterPreferenceModel(comparison_renderer, completer)
    c = labeled(1).comparison
    assert [asyncio.run(pm(c)) for _ in range(5)] == [-1.0, 1.0, 0.0, 0.0, 0.0]
    assert dict(pm.counts) == {"A": 1, "B": 1, "Tie": 2, "invalid": 1}
    assert completer.chats[0] == comparison_renderer.to_messages(c)
