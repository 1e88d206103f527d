"""Datasets: the batch at (epoch, i) is a pure function of (seed, epoch, i); splits are disjoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxcook.data import (
    ConversationDataset,
    ConversationFileBuilder,
    DataError,
    DatumConverter,
    DatumPolicy,
    conversation_to_datum,
    get_sft_builder,
)
from jaxcook.data.builders import HFChatBuilder, NoRobotsBuilder
from tests.data.conftest import qa, question_ids

N, BATCH = 22, 4  # 5 batches per epoch; 2 records left out of each epoch (drop-last)


@pytest.fixture(scope="module")
def records():
    return [(f"r{k}", qa(k)) for k in range(N)]


def _dataset(renderer, records, seed=7):
    return ConversationDataset(
        records, DatumConverter(renderer, DatumPolicy(max_length=64)), batch_size=BATCH, seed=seed
    )


def _epoch(ds, epoch):
    ds.set_epoch(epoch)
    return [ds.batch_indices(i).tolist() for i in range(len(ds))]


def test_same_epoch_and_index_give_the_same_batch(renderer, records):
    ds = _dataset(renderer, records)
    assert len(ds) == N // BATCH == 5
    ds.set_epoch(3)
    seen = [ds.get_batch(i) for i in range(len(ds))]
    # A fresh process resuming at (epoch 3, batch 2), with other epochs read in between.
    fresh = _dataset(renderer, records)
    fresh.set_epoch(5)
    fresh.get_batch(4)
    fresh.set_epoch(3)
    again = fresh.get_batch(2)
    assert [d.model_input for d in again] == [d.model_input for d in seen[2]]
    for a, b in zip(again, seen[2]):
        for key in ("target_tokens", "weights"):
            np.testing.assert_array_equal(a.loss_fn_inputs[key], b.loss_fn_inputs[key])
    # And the batch holds the datums of the records its indices name.
    for j, d in zip(fresh.batch_indices(2), again):
        assert d.model_input == conversation_to_datum(qa(int(j)), renderer, max_length=64).model_input


def test_epochs_reshuffle_and_cover_every_record_once(renderer, records):
    ds = _dataset(renderer, records)
    orders = {e: _epoch(ds, e) for e in range(4)}
    for batches in orders.values():
        flat = [j for b in batches for j in b]
        assert len(flat) == len(set(flat)) == (N // BATCH) * BATCH  # no record twice in an epoch
    assert len({str(b) for b in orders.values()}) == 4  # every epoch has its own order
    # With a record count that divides, each epoch is a permutation of all records.
    even = ConversationDataset(records[:20], ds.convert, batch_size=BATCH, seed=7)
    for e in range(3):
        assert sorted(j for b in _epoch(even, e) for j in b) == list(range(20))
    # Another seed, another order; the same seed, the same order.
    assert _epoch(_dataset(renderer, records, seed=8), 0) != _epoch(ds, 0)
    assert _epoch(_dataset(renderer, records, seed=7), 2) == orders[2]


def test_out_of_range_and_too_few_records(renderer, records):
    ds = _dataset(renderer, records)
    with pytest.raises(IndexError, match="batch 5 out of range; an epoch has 5 batches"):
        ds.get_batch(5)
    with pytest.raises(DataError, match="3 training records is fewer than batch_size=4"):
        ConversationDataset(records[:3], ds.convert, batch_size=4, name="tiny")


def test_file_split_is_disjoint_and_complete(tmp_path, renderer, tokenizer):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"messages": qa(k)}) + "\n" for k in range(N)))

    def build(seed, test_size=6):
        builder = ConversationFileBuilder(path=str(path), test_size=test_size, seed=seed)
        return builder.build(renderer, batch_size=4, max_length=64)

    data = build(seed=1)
    assert len(data.test) == 6 and data.stats["data/train_records"] == 16 and len(data.train) == 4
    # Line k + 1 of the file holds conversation k.
    train_ids = {int(data.train.records[j][0].rsplit(":", 1)[1]) - 1 for j in range(len(data.train.records))}
    test_ids = set(question_ids(tokenizer, data.test))
    assert len(train_ids) == 16 and train_ids.isdisjoint(test_ids) and train_ids | test_ids == set(range(N))
    # The same seed splits the same way; another seed differently.
    assert [d.model_input for d in build(seed=1).test] == [d.model_input for d in data.test]
    assert [d.model_input for d in build(seed=2).test] != [d.model_input for d in data.test]
    with pytest.raises(DataError, match="test_size=22 must be in"):
        build(seed=1, test_size=N)


def test_get_sft_builder(tmp_path):
    assert get_sft_builder("x.jsonl", test_size=3) == ConversationFileBuilder(path="x.jsonl", test_size=3)
    assert isinstance(get_sft_builder("HuggingFaceH4/no_robots"), NoRobotsBuilder)
    assert get_sft_builder("someone/chats", split="sft") == HFChatBuilder(name="someone/chats", split="sft")
    with pytest.raises(
        TypeError, match=r"ConversationFileBuilder \('x.jsonl'\) has no option \['tests_size'\]"
    ):
        get_sft_builder("x.jsonl", tests_size=3)
