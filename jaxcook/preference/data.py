"""Labeled comparisons as JSON: one row per line of a JSONL file, read with checks, written back.

Row format (tinker-cookbook's `ComparisonBuilderFromJsonl`):

    {"comparison": {"prompt_conversation": [messages], "completion_A": [messages],
                    "completion_B": [messages]},
     "label": "A" | "B" | "Tie"}

Each `[messages]` is a non-empty list of `{"role", "content", ...}` objects, checked like the
conversations of the SFT data (`jaxcook.data.parse_conversation`). A bad row (invalid JSON, a
missing key, a label outside A/B/Tie, a bad message) raises `DataFormatError` naming the file,
the line and the key; with `on_bad_row="skip"` it is dropped and counted instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from jaxcook.data.errors import DataFormatError, DataSourceError
from jaxcook.data.messages import parse_conversation
from jaxcook.preference.types import LABELS, Comparison, ComparisonRecord, LabeledComparison
from jaxcook.renderers import Message

OnBadRow = Literal["raise", "skip"]
COMPLETION_KEYS = ("prompt_conversation", "completion_A", "completion_B")


def labeled_comparison_from_json(row: Any, where: str) -> LabeledComparison:
    """A row of the format above as a `LabeledComparison` (errors name `where` and the key)."""
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in ("comparison", "label"):
        if key not in row:
            raise DataFormatError(f"{where}: missing key {key!r} (keys: {sorted(row)})")
    comparison = row["comparison"]
    if not isinstance(comparison, dict):
        raise DataFormatError(f"{where}: 'comparison' must be an object, got {type(comparison).__name__}")
    for key in COMPLETION_KEYS:
        if key not in comparison:
            raise DataFormatError(
                f"{where}: 'comparison' is missing key {key!r} (keys: {sorted(comparison)})"
            )
    label = row["label"]
    if label not in LABELS:
        raise DataFormatError(f"{where}: 'label' must be one of {list(LABELS)}, got {label!r}")
    parts = [parse_conversation(comparison[k], f"{where}: {k}") for k in COMPLETION_KEYS]
    return LabeledComparison(Comparison(*parts), label)


def labeled_comparison_to_json(labeled: LabeledComparison) -> dict[str, Any]:
    c = labeled.comparison
    return {
        "comparison": {
            "prompt_conversation": [message_to_json(m) for m in c.prompt_conversation],
            "completion_A": [message_to_json(m) for m in c.completion_A],
            "completion_B": [message_to_json(m) for m in c.completion_B],
        },
        "label": labeled.label,
    }


def message_to_json(message: Message) -> dict[str, Any]:
    """A message as the JSON object `parse_conversation` reads back (tool calls in OpenAI form)."""
    out: dict[str, Any] = {"role": message["role"], "content": message.get("content", "")}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "type": "function",
                **({"id": c.id} if c.id is not None else {}),
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in message["tool_calls"]
        ]
    for key in ("trainable", "name", "tool_call_id"):
        if key in message:
            out[key] = message[key]
    return out


class ComparisonsRead(NamedTuple):
    records: list[ComparisonRecord]
    bad_rows_skipped: int


def read_comparisons_jsonl(path: str | Path, *, on_bad_row: OnBadRow = "raise") -> ComparisonsRead:
    """Every labeled comparison of a JSONL file, checked; the `where` of each record is `path:line`."""
    if on_bad_row not in ("raise", "skip"):
        raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataSourceError(f"{path}: no such file (expected a JSONL file of labeled comparisons)")
    records, skipped = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                labeled = _parse_line(raw, where)
            except DataFormatError:
                if on_bad_row == "raise":
                    raise
                skipped += 1
                continue
            if labeled is not None:
                records.append((where, labeled))
    return ComparisonsRead(records, skipped)


def _parse_line(raw: bytes, where: str) -> LabeledComparison | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: not UTF-8 ({e})") from e
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from e
    return labeled_comparison_from_json(row, where)


def write_comparisons_jsonl(path: str | Path, comparisons: Iterable[LabeledComparison]) -> int:
    """Write one row per comparison (UTF-8, non-ASCII kept); returns the number of rows."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for labeled in comparisons:
            f.write(json.dumps(labeled_comparison_to_json(labeled), ensure_ascii=False) + "\n")
            n += 1
    return n
