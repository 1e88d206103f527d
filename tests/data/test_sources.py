"""Sources: JSONL conversation files (every kind of bad line) and Hugging Face datasets."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from jaxcook.data import (
    ConversationFileBuilder,
    DataFormatError,
    DataSourceError,
    HFChatBuilder,
    NoRobotsBuilder,
    Tulu3Builder,
    conversation_to_datum,
    load_hf_dataset,
    read_conversations_jsonl,
)
from tests.data.conftest import qa, question_ids

GOOD = json.dumps({"messages": qa(0)})

BAD_LINES = {
    "bad JSON": ('{"messages": [', "invalid JSON: Expecting value at column 15"),
    "not an object": ("[1, 2]", "expected a JSON object, got list"),
    "missing messages": (json.dumps({"msgs": []}), "missing key 'messages' (keys: ['msgs'])"),
    "messages not a list": (json.dumps({"messages": "hi"}), "messages must be a list, got str"),
    "empty messages": (json.dumps({"messages": []}), "messages is empty"),
    "no role": (json.dumps({"messages": [{"content": "x"}]}), "message 0: missing key 'role'"),
    "no content": (json.dumps({"messages": [{"role": "user"}]}), "message 0: missing key 'content'"),
    "unknown role": (
        json.dumps({"messages": [qa(0)[0], {"role": "bot", "content": "x"}]}),
        "message 1: unknown role 'bot'",
    ),
    "bad content": (json.dumps({"messages": [{"role": "user", "content": 5}]}), "'content' must be a string"),
}


def _write(tmp_path, lines, name="chats.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_error_names_file_and_line(tmp_path, kind):
    line, why = BAD_LINES[kind]
    path = _write(tmp_path, [GOOD, "", GOOD, line, GOOD])
    with pytest.raises(DataFormatError) as e:
        read_conversations_jsonl(path)
    assert str(e.value).startswith(f"{path}:4: ")  # line 4, blank line 2 counted
    assert why in str(e.value)


def test_bad_lines_skipped_and_counted(tmp_path, renderer):
    lines = [GOOD] + [line for line, _ in BAD_LINES.values()] + [GOOD, ""]
    path = _write(tmp_path, lines)
    read = read_conversations_jsonl(path, on_bad_line="skip")
    assert read.bad_lines_skipped == len(BAD_LINES)
    assert [w for w, _ in read.records] == [f"{path}:1", f"{path}:{len(BAD_LINES) + 2}"]
    data = ConversationFileBuilder(path=str(path), on_bad_line="skip").build(
        renderer, batch_size=1, max_length=64
    )
    assert data.stats["data/bad_lines_skipped"] == len(BAD_LINES)
    assert data.stats["data/train_records"] == 2


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataFormatError, match=f"{path}:2: not UTF-8"):
        read_conversations_jsonl(path)
    with pytest.raises(DataSourceError, match="nope.jsonl: no such file"):
        read_conversations_jsonl(tmp_path / "nope.jsonl")


def test_parts_tool_calls_and_flags_are_kept(tmp_path):
    call = {"type": "function", "id": "c1", "function": {"name": "add", "arguments": {"a": 1}}}
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}], "extra": 1},
            {"role": "assistant", "content": None, "tool_calls": [call], "trainable": True},
            {"role": "tool", "content": "1", "tool_call_id": "c1"},
        ]
    }
    (where, msgs), *_ = read_conversations_jsonl(_write(tmp_path, [json.dumps(record)])).records
    assert msgs[0] == {"role": "user", "content": [{"type": "text", "text": "hi"}]}  # unknown key dropped
    assert msgs[1]["content"] == "" and msgs[1]["trainable"] is True
    assert msgs[1]["tool_calls"][0].function.arguments == '{"a": 1}' and msgs[1]["tool_calls"][0].id == "c1"
    assert msgs[2]["tool_call_id"] == "c1"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A local copy of a chat dataset (train 10 rows, test 3 rows) as `save_to_disk` writes it."""
    path = tmp_path_factory.mktemp("hf") / "chats"
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"messages": qa(k), "id": k} for k in range(10)]),
            "test": datasets.Dataset.from_list([{"messages": qa(100 + k), "id": 100 + k} for k in range(3)]),
        }
    )
    dd.save_to_disk(str(path))
    return path


def test_hf_source_from_local_copy(hf_dir, renderer, tokenizer):
    data = HFChatBuilder(name=str(hf_dir), test_size=2, seed=3).build(renderer, batch_size=4, max_length=64)
    assert data.stats["data/train_records"] == 8 and len(data.train) == 2 and len(data.test) == 2
    train_ids = [k for i in range(2) for k in question_ids(tokenizer, data.train.get_batch(i))]
    assert set(train_ids).isdisjoint(question_ids(tokenizer, data.test))
    assert len(set(train_ids)) == 8 and set(train_ids) | set(question_ids(tokenizer, data.test)) == set(
        range(10)
    )
    # The datum equals the one built directly from the row's conversation.
    d = data.train.get_batch(0)[0]
    direct = conversation_to_datum(qa(train_ids[0]), renderer, max_length=64)
    assert d.model_input == direct.model_input
    np.testing.assert_array_equal(d.loss_fn_inputs["weights"], direct.loss_fn_inputs["weights"])


def test_no_robots_uses_its_test_split_and_tulu_the_last_reply(hf_dir, renderer, tokenizer):
    data = NoRobotsBuilder(name=str(hf_dir)).build(renderer, batch_size=5, max_length=64)
    assert question_ids(tokenizer, data.test) == [100, 101, 102] and len(data.train) == 2
    path = hf_dir.parent / "two_turns"
    datasets.Dataset.from_list([{"messages": qa(k) + qa(k + 50)} for k in range(4)]).save_to_disk(str(path))
    tulu = Tulu3Builder(name=str(path), test_size=1).build(renderer, batch_size=3, max_length=128)
    (d,) = tulu.test
    (k,) = question_ids(tokenizer, tulu.test)
    trained = d.loss_fn_inputs["target_tokens"][d.loss_fn_inputs["weights"] > 0]
    assert tokenizer.decode(trained) == f"answer {k + 50}<|im_end|>"  # the last reply only


def test_missing_message_column_and_split(hf_dir, renderer):
    with pytest.raises(
        DataFormatError, match=r"\[train\]: no column 'conversation'; columns: \['id', 'messages'\]"
    ):
        HFChatBuilder(name=str(hf_dir), message_field="conversation").build(
            renderer, batch_size=2, max_length=64
        )
    with pytest.raises(DataSourceError, match="no split 'validation'; splits: \\['test', 'train'\\]"):
        load_hf_dataset(str(hf_dir), split="validation")


def test_hub_error_is_clear(monkeypatch):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/no_robots' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataSourceError) as e:
        NoRobotsBuilder().build(None, batch_size=8, max_length=64)
    msg = str(e.value)
    assert "'HuggingFaceH4/no_robots' (split 'train')" in msg and "ConnectionError" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "save_to_disk" in msg


def _stream_builder(hf_dir, **kw):
    return HFChatBuilder(name=str(hf_dir), streaming=True, shuffle_buffer=4, seed=1, **kw)


def test_streaming_is_forward_only_and_deterministic(hf_dir, renderer, tokenizer):
    data = _stream_builder(hf_dir, num_train_rows=10).build(renderer, batch_size=2, max_length=64)
    train = data.train
    assert len(train) == 5 and data.test is None
    epoch0 = [question_ids(tokenizer, train.get_batch(i)) for i in range(5)]
    assert sorted(k for b in epoch0 for k in b) == list(range(10))  # each row once per epoch
    with pytest.raises(Exception, match="only moves forward: batch 1 was asked for after batch 4 of epoch 0"):
        train.get_batch(1)
    train.set_epoch(0)
    assert question_ids(tokenizer, train.get_batch(3)) == epoch0[3]  # skip ahead = a resume
    train.set_epoch(1)
    epoch1 = [question_ids(tokenizer, train.get_batch(i)) for i in range(5)]
    assert epoch1 != epoch0 and sorted(k for b in epoch1 for k in b) == list(range(10))
    with pytest.raises(IndexError):
        train.get_batch(5)


def test_streaming_test_rows_are_held_out(hf_dir, renderer, tokenizer):
    data = _stream_builder(hf_dir, test_size=3, num_train_rows=7).build(renderer, batch_size=3, max_length=64)
    test_ids = question_ids(tokenizer, data.test)
    train_ids = [k for i in range(len(data.train)) for k in question_ids(tokenizer, data.train.get_batch(i))]
    assert test_ids == [0, 1, 2] and len(train_ids) == 6 and set(train_ids).isdisjoint(test_ids)
    too_long = _stream_builder(hf_dir, num_train_rows=12).build(renderer, batch_size=4, max_length=64)
    too_long.train.get_batch(1)
    with pytest.raises(Exception, match="the stream ended inside batch 2 of epoch 0"):
        too_long.train.get_batch(2)
