"""Prompt files: JSONL records that say what to ask a model, for `scripts/sample.py` and the evaluators.

One JSON object per line, with exactly one of
    "prompt":   a string, sent as one user message (after an optional "system" string);
    "messages": a conversation ([{"role", "content"}, ...]) to which the model replies;
    "text":     raw text the model continues, no chat template;
and any other keys (a "reference" for the evaluators, ids, ...) kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcook.data.errors import DataFormatError
from jaxcook.types import ModelInput

PROMPT_KEYS = ("prompt", "messages", "text")


@dataclass(frozen=True)
class PromptRecord:
    where: str  # "file.jsonl:3", for error messages
    messages: list[dict] | None  # None for raw text
    text: str | None
    fields: dict[str, Any] = field(default_factory=dict)  # the record as read

    def model_input(self, renderer, tokenizer) -> ModelInput:
        if self.messages is not None:
            return renderer.build_generation_prompt(self.messages)
        return ModelInput.from_ints(tokenizer.encode(self.text, add_special_tokens=False))


def parse_record(record: Any, where: str) -> PromptRecord:
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    present = [k for k in PROMPT_KEYS if k in record]
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise DataFormatError(
            f"{where}: a prompt record needs exactly one of {', '.join(PROMPT_KEYS)} (found {found})"
        )
    key = present[0]
    value = record[key]
    if key == "messages":
        if not isinstance(value, list) or not value:
            raise DataFormatError(f"{where}: 'messages' must be a non-empty list of messages")
        for i, m in enumerate(value):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m):
                raise DataFormatError(f"{where}: messages[{i}] needs a 'role' and a 'content'")
        return PromptRecord(where, list(value), None, dict(record))
    if not isinstance(value, str) or not value:
        raise DataFormatError(f"{where}: {key!r} must be a non-empty string")
    if key == "text":
        return PromptRecord(where, None, value, dict(record))
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise DataFormatError(f"{where}: 'system' must be a string")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": value}
    ]
    return PromptRecord(where, messages, None, dict(record))


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Every record of a prompt JSONL file (blank lines skipped); a bad line is a `DataFormatError`
    naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such prompt file")
    records = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{where}: not valid JSON ({e.msg})") from e
            records.append(parse_record(record, where))
    if not records:
        raise DataFormatError(f"{path}: no prompt records")
    return records
