"""DPO pairs: (chosen, rejected) at even/odd indices, weights only on the completion, shared prompt."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcook.data import DataError, DataFormatError, UntrainableExampleError
from jaxcook.preference import (
    Comparison,
    ComparisonFileBuilder,
    DPODataset,
    DPOPairError,
    LabeledComparison,
    PairConverter,
    check_pairs,
    comparison_to_dpo_datums,
    write_comparisons_jsonl,
)
from jaxcook.types import Datum
from tests.preference.helpers import labeled, reply


def _encode(tokenizer, text):
    return list(tokenizer.encode(text, add_special_tokens=False))


def _trained(datum: Datum) -> list[int]:
    w = datum.loss_fn_inputs["weights"]
    return datum.loss_fn_inputs["target_tokens"][w > 0].tolist()


def _full_tokens(datum: Datum) -> list[int]:
    return datum.model_input.to_ints() + datum.loss_fn_inputs["target_tokens"][-1:].tolist()


def test_pair_trains_only_each_completion_with_unit_weights(tokenizer, renderer):
    chosen, rejected = comparison_to_dpo_datums(labeled(7, "A"), renderer, max_length=None)
    im_end = _encode(tokenizer, "<|im_end|>")
    # The trained targets are exactly the completion's text and its end-of-turn token.
    assert _trained(chosen) == _encode(tokenizer, "good 7") + im_end
    assert _trained(rejected) == _encode(tokenizer, "bad 7") + im_end
    for d in (chosen, rejected):
        w = d.loss_fn_inputs["weights"]
        assert set(np.unique(w).tolist()) == {0.0, 1.0}  # reduction "none": a log-prob sum per sequence
        # Only the tail is trained: every weight before the first 1 is 0, none after it is 0.
        first = int(np.argmax(w > 0))
        assert not w[:first].any() and w[first:].all()
    # Same prompt tokens: the sequences agree up to where the completions start.
    n_prompt = len(chosen.model_input.to_ints()) - len(_trained(chosen)) + 1
    assert _full_tokens(chosen)[:n_prompt] == _full_tokens(rejected)[:n_prompt]
    prompt = renderer.build_generation_prompt(labeled(7).comparison.prompt_conversation).to_ints()
    assert _full_tokens(chosen)[: len(prompt)] == prompt == _full_tokens(rejected)[: len(prompt)]


def test_label_b_puts_completion_b_first(renderer):
    chosen, rejected = comparison_to_dpo_datums(labeled(3, "B"), renderer, max_length=None)
    swapped = comparison_to_dpo_datums(labeled(3, "B").swap(), renderer, max_length=None)
    assert renderer.decode(_trained(chosen)).startswith("bad 3")
    assert renderer.decode(_trained(rejected)).startswith("good 3")
    assert _full_tokens(chosen) == _full_tokens(swapped[0]) and _full_tokens(rejected) == _full_tokens(
        swapped[1]
    )


def test_multi_message_completion_trains_its_assistant_messages_only(tokenizer, renderer):
    prompt = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "earlier"},
        {"role": "user", "content": "again"},
    ]
    completion = [
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "two"},
    ]
    lc = LabeledComparison(Comparison(prompt, completion, reply("x")), "A")
    chosen, _ = comparison_to_dpo_datums(lc, renderer, max_length=None)
    im_end = _encode(tokenizer, "<|im_end|>")
    # Neither the prompt's assistant message nor the completion's user message is trained.
    assert _trained(chosen) == _encode(tokenizer, "one") + im_end + _encode(tokenizer, "two") + im_end


def test_tie_and_untrainable(renderer):
    with pytest.raises(UntrainableExampleError, match="Tie"):
        comparison_to_dpo_datums(labeled(1, "Tie"), renderer, max_length=None)
    no_assistant = LabeledComparison(
        Comparison([{"role": "user", "content": "q"}], [{"role": "user", "content": "?"}], reply("b")), "A"
    )
    with pytest.raises(UntrainableExampleError, match=r"\(chosen\): the completion has no assistant"):
        comparison_to_dpo_datums(no_assistant, renderer, max_length=None)
    bad_role = LabeledComparison(
        Comparison(
            [{"role": "user", "content": "q"}], [{"role": "tool", "content": "x"}, *reply("a")], reply("b")
        ),
        "A",
    )
    with pytest.raises(DataFormatError, match=r"where \(chosen\): .*unknown role 'tool'"):
        comparison_to_dpo_datums(bad_role, renderer, max_length=None, where="where")


def test_truncation_and_drop(renderer):
    long = LabeledComparison(
        Comparison([{"role": "user", "content": "q"}], reply("word " * 50), reply("short")), "A"
    )
    full, _ = comparison_to_dpo_datums(long, renderer, max_length=None)
    assert full.length + 1 > 40
    cut, other = comparison_to_dpo_datums(long, renderer, max_length=40)
    assert cut.length == 39 and cut.loss_fn_inputs["weights"].sum() > 0  # 40 tokens -> 39 inputs
    assert other.length < 39  # the short side is untouched
    convert = PairConverter(renderer, max_length=40, too_long="drop")
    assert convert.convert([("long", long), ("ok", labeled(0))]) != []
    assert convert.counts["data/dropped_too_long"] == 1 and convert.counts["data/pairs"] == 1
    convert = PairConverter(renderer, max_length=40)
    convert.convert([("long", long)])
    assert convert.counts["data/truncated"] == 1


def test_check_pairs_names_the_problem(renderer):
    pair = list(comparison_to_dpo_datums(labeled(0), renderer, max_length=None))
    check_pairs(pair + pair)
    with pytest.raises(DPOPairError, match="3 datums, an odd number.*datum 2 has no partner"):
        check_pairs(pair + pair[:1])
    with pytest.raises(DPOPairError, match="no datums"):
        check_pairs([])
    dead = Datum(pair[1].model_input, {**pair[1].loss_fn_inputs, "weights": np.zeros(pair[1].length)})
    with pytest.raises(DPOPairError, match=r"datum 3 \(rejected of pair 1\) has no trained token"):
        check_pairs(pair + [pair[0], dead])


def _records(n, tie_every=0):
    """Comparisons k < n preferring "good k"; odd k are stored swapped (A = "bad k", label "B")."""
    out = []
    for k in range(n):
        lc = labeled(k, "Tie") if tie_every and k % tie_every == 0 else labeled(k)
        out.append((f"r{k}", lc.swap() if k % 2 else lc))
    return out


def test_dataset_batches_are_interleaved_pairs_deterministic_per_epoch(renderer):
    records = _records(10)
    ds = DPODataset(records, PairConverter(renderer, max_length=None), batch_size=3, seed=5)
    assert len(ds) == 3  # 10 // 3, the last record of each epoch's order is left out
    batches = [ds.get_batch(i) for i in range(len(ds))]
    for batch in batches:
        assert len(batch) == 6
        check_pairs(batch)
        for chosen, rejected in zip(batch[0::2], batch[1::2], strict=True):
            assert renderer.decode(_trained(chosen)).startswith("good")
            assert renderer.decode(_trained(rejected)).startswith("bad")
    seen = [renderer.decode(_trained(c)) for b in batches for c in b[0::2]]
    assert len(set(seen)) == 9  # no comparison twice in an epoch
    # Same (seed, epoch, i) -> same datums, in a fresh dataset; another epoch -> another order.
    again = DPODataset(records, PairConverter(renderer, max_length=None), batch_size=3, seed=5)
    again.set_epoch(1)
    again.set_epoch(0)
    assert [_full_tokens(d) for d in again.get_batch(2)] == [_full_tokens(d) for d in batches[2]]
    ds.set_epoch(1)
    assert [_full_tokens(d) for d in ds.get_batch(0)] != [_full_tokens(d) for d in batches[0]]


def test_ties_and_bad_rows_leave_batches_short_but_even(renderer):
    records = _records(8, tie_every=4)  # records 0 and 4 are ties

    class Lazy(list):  # a lazy source whose row 6 is malformed when read
        def __getitem__(self, i):
            if i == 6:
                raise DataFormatError("hub[train] row 6: missing column(s) ['chosen']")
            return super().__getitem__(i)

    convert = PairConverter(renderer, max_length=None, on_bad_row="skip")
    ds = DPODataset(Lazy(records), convert, batch_size=8)
    batch = ds.get_batch(0)
    check_pairs(batch)
    assert len(batch) == 2 * 5  # 8 - 2 ties - 1 bad row
    assert ds.stats() == {"data/skipped_tie": 2, "data/skipped_bad_row": 1, "data/pairs": 5}
    strict = DPODataset(Lazy(records), PairConverter(renderer, max_length=None), batch_size=8)
    with pytest.raises(DataFormatError, match="row 6"):
        strict.get_batch(0)


def test_builder_holds_out_a_disjoint_test_split(tmp_path, renderer):
    path = tmp_path / "prefs.jsonl"
    write_comparisons_jsonl(path, [lc for _, lc in _records(12, tie_every=5)])  # ties: 0, 5, 10
    data = ComparisonFileBuilder(path=str(path), test_size=4, seed=1).build_dpo(
        renderer, batch_size=2, max_length=None
    )
    assert data.stats["data/train_records"] == 8 and data.stats["data/test_records"] == 4
    assert len(data.train) == 4
    check_pairs(data.test)
    test_prompts = {renderer.decode(d.model_input.to_ints()) for d in data.test}
    train = [d for i in range(len(data.train)) for d in data.train.get_batch(i)]
    assert not test_prompts & {renderer.decode(d.model_input.to_ints()) for d in train}
    n_test_ties = data.stats.get("data/test_skipped_tie", 0)
    assert len(data.test) == 2 * (4 - n_test_ties)
    assert n_test_ties + data.train.stats().get("data/skipped_tie", 0) == 3
    with pytest.raises(DataError, match="fewer than batch_size=9"):
        ComparisonFileBuilder(path=str(path), test_size=4).build_dpo(renderer, batch_size=9, max_length=None)
