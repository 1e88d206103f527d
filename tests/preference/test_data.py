"""Comparison types and the JSONL row format: swap, round trip, and every kind of bad row."""

from __future__ import annotations

import json

import pytest

from jaxcook.data import DataFormatError, DataSourceError
from jaxcook.preference import (
    Comparison,
    LabeledComparison,
    read_comparisons_jsonl,
    write_comparisons_jsonl,
)
from jaxcook.renderers import FunctionBody, ToolCall
from tests.preference.helpers import labeled, reply


def test_swap_exchanges_completions_and_flips_the_label():
    lc = labeled(1, "A")
    s = lc.swap()
    assert s.comparison.completion_A == lc.comparison.completion_B
    assert s.comparison.completion_B == lc.comparison.completion_A
    assert s.comparison.prompt_conversation == lc.comparison.prompt_conversation
    assert (s.label, labeled(1, "B").swap().label, labeled(1, "Tie").swap().label) == ("B", "A", "Tie")
    assert s.swap() == lc
    # Swapping keeps what is preferred: the chosen text is the same either way.
    assert s.chosen_rejected() == lc.chosen_rejected()
    with pytest.raises(ValueError, match="Tie has no chosen"):
        labeled(1, "Tie").chosen_rejected()
    with pytest.raises(ValueError, match="label must be one of"):
        LabeledComparison(lc.comparison, "C")


def test_jsonl_round_trip(tmp_path):
    tool_call = ToolCall(FunctionBody("add", '{"a": 1}'), id="c1")
    rows = [
        labeled(0, "A"),
        labeled(1, "B"),
        labeled(2, "Tie"),
        LabeledComparison(
            Comparison(
                [{"role": "system", "content": "Be brief. Ünïcode ✓"}, {"role": "user", "content": "2+2?"}],
                [
                    {"role": "assistant", "content": "", "tool_calls": [tool_call]},
                    {"role": "tool", "content": "4", "tool_call_id": "c1"},
                    {"role": "assistant", "content": "4"},
                ],
                reply("5"),
            ),
            "A",
        ),
    ]
    path = tmp_path / "prefs.jsonl"
    assert write_comparisons_jsonl(path, rows) == 4
    read = read_comparisons_jsonl(path)
    assert read.bad_rows_skipped == 0
    assert [lc for _, lc in read.records] == rows
    assert [w for w, _ in read.records] == [f"{path}:{i}" for i in range(1, 5)]


def _row(**over) -> dict:
    row = {
        "comparison": {
            "prompt_conversation": [{"role": "user", "content": "q"}],
            "completion_A": reply("a"),
            "completion_B": reply("b"),
        },
        "label": "A",
    }
    row["comparison"].update(over.pop("comparison", {}))
    row.update(over)
    return row


BAD_ROWS = {
    "missing completion": (
        json.dumps(
            {
                "comparison": {
                    "prompt_conversation": [{"role": "user", "content": "q"}],
                    "completion_A": reply("a"),
                },
                "label": "A",
            }
        ),
        "missing key 'completion_B'",
    ),
    "bad label": (json.dumps(_row(label="C")), r"'label' must be one of \['A', 'B', 'Tie'\], got 'C'"),
    "lowercase label": (json.dumps(_row(label="a")), "got 'a'"),
    "no label": (json.dumps({"comparison": _row()["comparison"]}), "missing key 'label'"),
    "bad json": ('{"comparison": {', "invalid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object, got list"),
    "empty completion": (
        json.dumps(_row(comparison={"completion_B": []})),
        "completion_B: messages is empty",
    ),
    "bad role": (
        json.dumps(_row(comparison={"completion_A": [{"role": "robot", "content": "x"}]})),
        "completion_A: message 0: unknown role 'robot'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_and_line_or_is_skipped_and_counted(tmp_path, case):
    text, message = BAD_ROWS[case]
    path = tmp_path / "prefs.jsonl"
    good = json.dumps(_row())
    path.write_text(f"{good}\n\n{text}\n{good}\n")  # the bad row is on line 3 (line 2 is blank)
    with pytest.raises(DataFormatError, match=rf"{path}:3: .*{message}"):
        read_comparisons_jsonl(path)
    read = read_comparisons_jsonl(path, on_bad_row="skip")
    assert read.bad_rows_skipped == 1
    assert [w for w, _ in read.records] == [f"{path}:1", f"{path}:4"]


def test_missing_file_and_bad_policy(tmp_path):
    with pytest.raises(DataSourceError, match="no such file"):
        read_comparisons_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="on_bad_row"):
        read_comparisons_jsonl(tmp_path / "nope.jsonl", on_bad_row="ignore")
