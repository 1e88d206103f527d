"""Reward-model data: one trained token, the label's; the scoring prompt is the training prefix."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcook.data import DataFormatError
from jaxcook.preference import (
    Comparison,
    ComparisonFileBuilder,
    ComparisonRenderer,
    ComparisonRMDataset,
    LabeledComparison,
    write_comparisons_jsonl,
)
from jaxcook.preference.reward_model import HEADER_A, HEADER_B, HEADER_PREFERENCE
from tests.preference.helpers import labeled, reply


@pytest.fixture(scope="module")
def comparison_renderer(renderer):
    return ComparisonRenderer(renderer)


def _encode(tokenizer, text):
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_label_tokens_of_smollm2(tokenizer, comparison_renderer):
    ids = comparison_renderer.label_token_ids
    # "A" and "B" are single tokens; "Tie" is "T" + "ie", so a Tie trains (and is scored by) "T".
    assert _encode(tokenizer, "A") == [ids["A"]] and _encode(tokenizer, "B") == [ids["B"]]
    assert _encode(tokenizer, "Tie") == [ids["Tie"], _encode(tokenizer, "ie")[0]]
    assert tokenizer.decode([ids["Tie"]]) == "T"


@pytest.mark.parametrize("label", ["A", "B", "Tie"])
def test_exactly_one_trained_token_the_label(tokenizer, comparison_renderer, label):
    lc = labeled(4, label)
    datum = comparison_renderer.to_datum(lc, max_length=None)
    w = datum.loss_fn_inputs["weights"]
    assert np.flatnonzero(w).tolist() == [len(w) - 1] and w[-1] == 1.0  # the last target only
    assert datum.loss_fn_inputs["target_tokens"][-1] == comparison_renderer.label_token_ids[label]
    # The sequence before the label is the scoring prompt, token for token.
    prompt = comparison_renderer.build_generation_prompt(lc.comparison).to_ints()
    assert datum.model_input.to_ints() == prompt
    # ... which is the chat of the reference format (SmolLM2's default system prompt first).
    text = tokenizer.decode(prompt)
    for part in ("question 4", HEADER_A, "good 4", HEADER_B, "bad 4", HEADER_PREFERENCE):
        assert part in text
    assert text.index(HEADER_A) < text.index("good 4") < text.index(HEADER_B) < text.index("bad 4")
    assert text.endswith(f"<|im_start|>system\n{HEADER_PREFERENCE}<|im_end|>\n<|im_start|>assistant\n")


def test_too_long_is_dropped_not_cut_and_bad_rows(comparison_renderer):
    long = LabeledComparison(
        Comparison([{"role": "user", "content": "q " * 80}], reply("a"), reply("b")), "A"
    )
    n = comparison_renderer.to_datum(long, max_length=None).length + 1
    records = [
        ("long", long),
        ("ok", labeled(0)),
        (
            "bad",
            LabeledComparison(
                Comparison(
                    [{"role": "user", "content": "q"}], [{"role": "tool", "content": "x"}], reply("b")
                ),
                "A",
            ),
        ),
    ]
    ds = ComparisonRMDataset(records, comparison_renderer, batch_size=3, max_length=n - 1, on_bad_row="skip")
    assert len(ds.get_batch(0)) == 1
    assert ds.stats() == {"data/dropped_too_long": 1, "data/skipped_bad_row": 1, "data/datums": 1}
    strict = ComparisonRMDataset(records, comparison_renderer, batch_size=3, max_length=None)
    with pytest.raises(DataFormatError, match="bad: .*unknown role 'tool'"):
        strict.get_batch(0)


def test_random_swap_is_seeded_and_keeps_the_preference(comparison_renderer):
    records = [(f"r{k}", labeled(k, "A")) for k in range(64)]
    ds = ComparisonRMDataset(records, comparison_renderer, batch_size=64, max_length=None, seed=3)
    batch = ds.get_batch(0)
    order = ds.batch_indices(0)
    ids = comparison_renderer.label_token_ids
    labels = [int(d.loss_fn_inputs["target_tokens"][-1]) for d in batch]
    swapped = [ds.swapped(j) for j in order]
    # A swapped comparison shows "good" second and is labeled B: the preference is unchanged.
    assert labels == [ids["B"] if s else ids["A"] for s in swapped]
    for d, s in zip(batch, swapped, strict=True):
        text = comparison_renderer.renderer.decode(d.model_input.to_ints())
        assert (text.index("good") > text.index("bad")) == s
    assert 16 < sum(swapped) < 48  # p = 1/2: 64 coins land in (16, 48) with probability > 0.9999
    again = ComparisonRMDataset(records, comparison_renderer, batch_size=64, max_length=None, seed=3)
    assert [d.model_input.to_ints() for d in again.get_batch(0)] == [d.model_input.to_ints() for d in batch]
    ds.set_epoch(1)
    assert [ds.swapped(j) for j in range(64)] != [again.swapped(j) for j in range(64)]


def test_both_orders(comparison_renderer):
    records = [(f"r{k}", labeled(k, label)) for k, label in enumerate("AB")]
    ds = ComparisonRMDataset(records, comparison_renderer, batch_size=2, max_length=None, swap="both")
    batch = ds.get_batch(0)
    assert len(batch) == 4
    ids = comparison_renderer.label_token_ids
    labels = [int(d.loss_fn_inputs["target_tokens"][-1]) for d in batch]
    assert sorted(labels) == sorted([ids["A"], ids["B"]] * 2)
    assert labels[0] != labels[1] and labels[2] != labels[3]  # each comparison, then its swap


def test_builder_reward_model_split(tmp_path, comparison_renderer):
    path = tmp_path / "prefs.jsonl"
    write_comparisons_jsonl(path, [labeled(k, "AB"[k % 2]) for k in range(10)])
    data = ComparisonFileBuilder(path=str(path), test_size=3).build_reward_model(
        comparison_renderer, batch_size=2, max_length=None
    )
    assert len(data.train) == 3 and len(data.test) == 6  # the 3 test comparisons in both orders
    assert all(int((d.loss_fn_inputs["weights"] > 0).sum()) == 1 for d in data.test)


class _FixedLogprobs:
    """A client whose forward gives log p = -1 for token `preferred` and -2 for any other."""

    def __init__(self, preferred: int):
        self.preferred = preferred

    def forward(self, data):
        from concurrent.futures import Future
        from types import SimpleNamespace

        out = [
            {"logprobs": np.where(d.loss_fn_inputs["target_tokens"] == self.preferred, -1.0, -2.0)}
            for d in data
        ]
        f = Future()
        f.set_result(SimpleNamespace(loss_fn_outputs=out))
        return f


def test_label_accuracy_overall_and_per_group(comparison_renderer):
    from jaxcook.preference.rm_eval import LabelAccuracyEvaluator

    ids = comparison_renderer.label_token_ids
    data = [comparison_renderer.to_datum(labeled(k, "AB"[k % 2]), max_length=None) for k in range(6)]
    # the client always prefers "A": right on the A-labelled datums 0, 2, 4 only
    groups = ["slip", "slip", "slip", "off_topic", "off_topic", "off_topic"]
    metrics = LabelAccuracyEvaluator(data, ids, batch_size=4, groups=groups)(_FixedLogprobs(ids["A"]))
    assert metrics == {
        "test/label_accuracy": 0.5,
        "test/label_accuracy/slip": pytest.approx(2 / 3),
        "test/label_accuracy/off_topic": pytest.approx(1 / 3),
    }
    assert LabelAccuracyEvaluator(data, ids)(_FixedLogprobs(ids["A"])) == {"test/label_accuracy": 0.5}
    with pytest.raises(ValueError, match="2 groups for 6 datums"):
        LabelAccuracyEvaluator(data, ids, groups=["a", "b"])


def test_label_accuracy_one_forward_matches_two_on_a_real_model():
    """The single [T, K] forward gives the verdicts of scoring each label in its own forward."""
    from jaxcook.engine.batching import BucketConfig
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.preference.rm_eval import LabelAccuracyEvaluator
    from jaxcook.types import Datum
    from tests.engine.tiny import random_datums, tiny_model

    ids = {"A": 5, "B": 7}
    data = []
    for k, d in enumerate(random_datums(12, lengths=(6, 20), seed=9)):
        targets, weights = d.loss_fn_inputs["target_tokens"].copy(), np.zeros(d.length, np.float32)
        targets[-1], weights[-1] = ids["AB"[k % 2]], 1.0
        data.append(Datum(d.model_input, {"target_tokens": targets, "weights": weights}))
    client = LocalTrainingClient(
        tiny_model(), lora=None, buckets=BucketConfig(seq_buckets=(32,), batch_buckets=(4, 8, 16))
    )
    got = LabelAccuracyEvaluator(data, ids, batch_size=8)(client)

    def last_logprob(label):
        probe = []
        for d in data:
            targets = d.loss_fn_inputs["target_tokens"].copy()
            targets[-1] = ids[label]
            probe.append(Datum(d.model_input, {**d.loss_fn_inputs, "target_tokens": targets}))
        return np.array([o["logprobs"][-1] for o in client.forward(probe).result().loss_fn_outputs])

    a, b = last_logprob("A"), last_logprob("B")
    right = [(a[k] > b[k]) if k % 2 == 0 else (b[k] > a[k]) for k in range(len(data))]
    assert 0 < np.mean(right) < 1  # a random model gets some right and some wrong
    assert got == {"test/label_accuracy": pytest.approx(np.mean(right))}
