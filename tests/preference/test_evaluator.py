"""Win rate of a policy vs references, judged in both orders, with its standard error over prompts."""

from __future__ import annotations

import asyncio
import math

import pytest

from jaxcook.preference import Comparison, ComparisonEvaluator, win_rate_metrics
from jaxcook.renderers import get_text_content
from tests.preference.helpers import reply


def test_win_rate_metrics_hand_computed():
    # 4 prompts. Forward s (policy as B) and reverse r (policy as A):
    #   wins forward (1+s)/2 = [1, 0, 0.5, 1];  wins reverse (1-r)/2 = [1, 0, 1, 0]
    #   per-prompt w = [1, 0, 0.75, 0.5];  mean = 2.25/4 = 0.5625
    #   deviations [0.4375, -0.5625, 0.1875, -0.0625], squares sum = 0.19140625 + 0.31640625
    #   + 0.03515625 + 0.00390625 = 0.546875; var (ddof=1) = 0.18229167; stderr = sqrt(var/4)
    m = win_rate_metrics([1, -1, 0, 1], [-1, 1, -1, 1])
    assert m["win_rate"] == pytest.approx(0.5625)
    assert m["win_rate_stderr"] == pytest.approx(math.sqrt(0.546875 / 3 / 4))
    assert m["num_comparisons"] == 4 and m["num_judgements"] == 8
    assert m["tie_rate"] == pytest.approx(1 / 8)
    assert m["win_rate_policy_as_B"] == pytest.approx(2.5 / 4)
    assert m["win_rate_policy_as_A"] == pytest.approx(2 / 4)
    # One order only, 0/1 outcomes: the binomial stderr sqrt(p(1-p)/(n-1)) = sqrt(0.25/3).
    one = win_rate_metrics([1, 1, -1, -1])
    assert one["win_rate"] == 0.5 and one["win_rate_stderr"] == pytest.approx(math.sqrt(0.25 / 3))
    assert "win_rate_policy_as_A" not in one
    with pytest.raises(ValueError, match="at least 2"):
        win_rate_metrics([1])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        win_rate_metrics([2, 0])


class EchoPolicy:
    """Answers "P<k>" to the prompt "q<k>"."""

    async def __call__(self, messages):
        return {"role": "assistant", "content": "P" + messages[-1]["content"][1:]}


class LengthJudge:
    """Prefers the longer completion (ties 0), and keeps every comparison it judged."""

    def __init__(self):
        self.seen = []

    async def __call__(self, c: Comparison) -> float:
        self.seen.append(c)
        a, b = (len(get_text_content(x[0])) for x in (c.completion_A, c.completion_B))
        return float((b > a) - (b < a))


def test_evaluator_on_fake_policy_and_judge():
    # References for q0..q3 have lengths 1, 2, 3, 4; the policy always writes 2 characters.
    refs = ["r", "rr", "rrr", "rrrr"]
    comparisons = [
        Comparison([{"role": "user", "content": f"q{k}"}], reply(refs[k]), reply("xx")) for k in range(4)
    ]
    judge = LengthJudge()
    m = asyncio.run(ComparisonEvaluator(judge, comparisons)(EchoPolicy()))
    # Per-prompt wins w = [1, 0.5, 0, 0] (longer, same length = tie, shorter, shorter), the same in
    # both orders. Mean 1.5/4 = 0.375; deviations .625 .125 -.375 -.375, squares sum 0.6875.
    assert m["comparison/win_rate"] == pytest.approx(1.5 / 4)
    assert m["comparison/win_rate_stderr"] == pytest.approx(math.sqrt(0.6875 / 3 / 4))
    assert m["comparison/num_judgements"] == 8 and m["comparison/tie_rate"] == pytest.approx(2 / 8)
    # The policy's reply is B in the forward order and A in the reverse one; completion_B is replaced.
    assert [get_text_content(c.completion_B[0]) for c in judge.seen[:4]] == ["P0", "P1", "P2", "P3"]
    assert [get_text_content(c.completion_A[0]) for c in judge.seen[4:]] == ["P0", "P1", "P2", "P3"]
    one_way = asyncio.run(
        ComparisonEvaluator(LengthJudge(), comparisons, both_ways=False, name=None)(EchoPolicy())
    )
    assert one_way["win_rate"] == pytest.approx(1.5 / 4) and one_way["num_judgements"] == 4


class PositionBiasedJudge:
    """Always says B: a judge with a pure position bias."""

    async def __call__(self, c):
        return 1.0


def test_both_orders_cancel_a_position_bias():
    comparisons = [
        Comparison([{"role": "user", "content": f"q{k}"}], reply("r"), reply("x")) for k in range(3)
    ]
    both = asyncio.run(ComparisonEvaluator(PositionBiasedJudge(), comparisons)(EchoPolicy()))
    one = asyncio.run(ComparisonEvaluator(PositionBiasedJudge(), comparisons, both_ways=False)(EchoPolicy()))
    assert one["comparison/win_rate"] == 1.0  # fooled
    assert both["comparison/win_rate"] == 0.5 and both["comparison/win_rate_stderr"] == 0.0
