"""The data policy made visible: truncated / skipped examples counted per step and per run, located."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from jaxcook.data import DatumConverter, DatumPolicy, UntrainableExampleError, conversation_to_datum
from jaxcook.data.accounting import batch_with_counts, run_totals
from jaxcook.data.builders import ConversationFileBuilder

LONG = " ".join(f"w{k}" for k in range(120))  # ~240 tokens: longer than max_length=64
SHORT_Q = [{"role": "user", "content": "question"}]


def chat(user, assistant=None):
    messages = [{"role": "user", "content": user}]
    return messages + ([{"role": "assistant", "content": assistant}] if assistant is not None else [])


def test_truncation_that_removes_every_trained_token_is_skipped_and_counted_even_under_raise(
    renderer, caplog
):
    convert = DatumConverter(renderer, DatumPolicy(max_length=64))  # on_untrainable="raise"
    with caplog.at_level(logging.WARNING, logger="jaxcook.data.datum"):
        assert convert("chats.jsonl:7", chat(LONG, "ok")) is None  # the reply lies past token 64
        kept = convert("chats.jsonl:8", chat("hi", LONG))  # the reply is cut, not lost
    assert kept is not None and kept.length == 63
    trained = int(np.count_nonzero(kept.loss_fn_inputs["weights"]))
    counts = convert.counts
    assert counts["data/skipped_untrainable"] == counts["data/skipped_truncated_away"] == 1
    assert counts["data/truncated"] == 1 and counts["data/datums"] == 1
    assert counts["data/truncated_trained_tokens"] > 100  # most of both replies
    assert "chats.jsonl:7" in caplog.text and "skipped" in caplog.text
    full = conversation_to_datum(chat("hi", LONG), renderer, max_length=None, reduction="none")
    n_full = int(np.count_nonzero(full.loss_fn_inputs["weights"]))
    assert f"chats.jsonl:8: {full.length + 1} tokens cut to max_length=64" in caplog.text
    assert f"({n_full - trained} of {n_full} trained tokens cut)" in caplog.text
    assert convert.examples == {"skipped_truncated_away": ["chats.jsonl:7"], "truncated": ["chats.jsonl:8"]}


def test_only_the_first_few_locations_are_logged_then_counted(renderer, caplog):
    convert = DatumConverter(renderer, DatumPolicy(max_length=64), log_first=2)
    with caplog.at_level(logging.WARNING, logger="jaxcook.data.datum"):
        convert.convert_all([(f"f.jsonl:{k}", chat("hi", LONG)) for k in range(1, 6)])
    assert convert.counts["data/truncated"] == 5 and convert.examples["truncated"] == [
        "f.jsonl:1",
        "f.jsonl:2",
    ]
    assert "f.jsonl:2" in caplog.text and "f.jsonl:3" not in caplog.text
    assert "further ones are only counted, in data/truncated" in caplog.text


def write_jsonl(path, conversations):
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    return path


def test_batch_counts_are_the_counters_each_batch_moved(renderer, tmp_path):
    # line 1: fine, 2: truncated, 3: truncated away, 4: no assistant turn (skipped by policy)
    path = write_jsonl(tmp_path / "d.jsonl", [chat("a", "b"), chat("hi", LONG), chat(LONG, "ok"), chat("q")])
    data = ConversationFileBuilder(path=str(path), on_untrainable="skip").build(
        renderer, batch_size=2, max_length=64
    )
    per_step = []
    for i in range(len(data.train)):
        batch, counts = batch_with_counts(data.train, i)
        per_step.append(counts)
        assert len(batch) == 2 - counts["data/skipped_untrainable"]
    totals = run_totals(per_step)
    assert totals["data/truncated"] == 1 and totals["data/skipped_untrainable"] == 2
    assert totals["data/skipped_truncated_away"] == 1 and totals["data/skipped_bad_record"] == 0
    assert data.train.stats()["data/datums"] == 2


def test_an_sft_run_logs_the_counts_per_step_and_per_run_with_locations(tmp_path):
    import jaxcook

    rows = [chat(f"q{k}", f"a{k}") for k in range(5)] + [chat("hi", LONG), chat(LONG, "ok"), chat("q")]
    path = write_jsonl(tmp_path / "chats.jsonl", rows)
    result = jaxcook.run(
        "sft",
        tiny=True,
        dataset=str(path),
        dataset_options={"on_untrainable": "skip", "seed": 0},
        max_length=64,
        batch_size=4,
        max_steps=None,
        eval_every=0,
        **{"run.log_dir": str(tmp_path / "run")},
    )
    log_dir = tmp_path / "run"
    metrics = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in metrics if "train/loss" in r]
    assert len(steps) == 2  # 8 records, batch 4, one epoch
    per_step = {k: sum(r["data/" + k] for r in steps) for k in ("truncated", "skipped_untrainable")}
    assert per_step == {"truncated": 1, "skipped_untrainable": 2}
    # the two skipped examples were not trained on: 8 records, 6 sequences
    assert sum(r["tokens/num_sequences"] for r in steps) == 6
    final = metrics[-1]
    assert final["data_total/truncated"] == 1 and final["data_total/skipped_truncated_away"] == 1
    assert final["data_total/skipped_untrainable"] == 2
    text = (log_dir / "logs.log").read_text()
    assert f"{path}:6: " in text and f"{path}:7: " in text and f"{path}:8: " in text
    assert "data policy over the run: truncated=1" in text
    assert result.metrics[-1]["data_total/truncated"] == 1


def test_an_untrainable_example_under_raise_still_stops_with_its_location(renderer):
    # Only truncation-caused losses are always skipped; a record with nothing to train is the
    # data's fault and follows on_untrainable.
    with pytest.raises(UntrainableExampleError, match=r"x.jsonl:4: .*no assistant message"):
        DatumConverter(renderer, DatumPolicy(max_length=64))("x.jsonl:4", chat("q"))
