"""Hugging Face preference datasets -> labeled comparisons (hub name or a local copy of the same schema).

Schemas assumed (row -> `LabeledComparison`; "A" is always the first-named response):

- `hh_rlhf` (Anthropic/hh-rlhf; splits train/test): `chosen`, `rejected`: transcripts
  "\\n\\nHuman: ...\\n\\nAssistant: ...". Both are parsed into messages (Human -> user,
  Assistant -> assistant, text stripped); the prompt is their longest common prefix, cut back to
  its last user message; the completions are the rest. A = chosen, label "A".
- `ultrafeedback`, either of:
  * HuggingFaceH4/ultrafeedback_binarized (splits train_prefs/test_prefs; also argilla's
    "-cleaned" variant): `chosen`, `rejected`: message lists that include the user prompt (and
    a `prompt` string, used only when the lists share no prefix). Split like hh_rlhf.
  * argilla/ultrafeedback-binarized-preferences (split train): `instruction`,
    `chosen_response`, `rejected_response` strings -> prompt [user: instruction].
  A = chosen, label "A".
- `helpsteer3` (nvidia/HelpSteer3, config "preference"; splits train/validation): `context`
  (message list), `response1`, `response2` (strings), `overall_preference` in -3..3 where
  negative prefers response1 and 0 is a tie. A = response1: label "A" if < 0, "B" if > 0, "Tie"
  if 0. (tinker-cookbook 0.6.1 maps > 0 to "A", the reverse of the dataset card; we follow the card.)
- `comparison`: rows in jaxcook's JSONL format (`{"comparison": {...}, "label": ...}`).

Rows are converted when read (a hub set holds up to ~160k rows); a bad row raises
`DataFormatError` naming the dataset, split and row, which the datasets skip and count when
`on_bad_row="skip"`. Missing columns are reported when the dataset is opened.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from jaxcook.data.builders import Subset
from jaxcook.data.errors import DataFormatError
from jaxcook.data.messages import parse_conversation
from jaxcook.data.sources import load_hf_dataset
from jaxcook.preference.builders import ComparisonBuilder, ComparisonSplits, in_memory_splits
from jaxcook.preference.data import labeled_comparison_from_json
from jaxcook.preference.types import Comparison, ComparisonRecord, LabeledComparison
from jaxcook.renderers import Message

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(text: Any, where: str) -> list[Message]:
    """ "\\n\\nHuman: q\\n\\nAssistant: a ..." -> [user q, assistant a, ...]."""
    if not isinstance(text, str):
        raise DataFormatError(f"{where}: expected a transcript string, got {type(text).__name__}")
    parts = _HH_TURN.split("\n\n" + text.lstrip())  # the first turn's "\n\n" is optional
    if parts[0].strip():
        raise DataFormatError(
            f"{where}: a transcript must start with '\\n\\nHuman:'; it starts with {text[:40]!r}"
        )
    return [
        {"role": _HH_ROLES[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)
    ]


def split_shared_prompt(
    a: list[Message], b: list[Message], where: str
) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, rest of a, rest of b): the longest common prefix, cut back to its last user message."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    users = [i for i in range(n) if a[i]["role"] == "user"]
    if not users:
        raise DataFormatError(f"{where}: the two conversations share no user message to use as the prompt")
    n = users[-1] + 1
    if a[n:] == b[n:]:
        raise DataFormatError(f"{where}: the two conversations are identical")
    for side, rest in (("first", a[n:]), ("second", b[n:])):
        if not any(m["role"] == "assistant" for m in rest):
            raise DataFormatError(f"{where}: the {side} conversation has no assistant reply after the prompt")
    return a[:n], a[n:], b[n:]


def _columns(row: dict, where: str, *keys: str) -> list[Any]:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataFormatError(f"{where}: missing column(s) {missing} (columns: {sorted(row)})")
    return [row[k] for k in keys]


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _reply(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def hh_rlhf_row(row: dict, where: str) -> LabeledComparison:
    chosen, rejected = _columns(row, where, "chosen", "rejected")
    a = parse_hh_transcript(chosen, f"{where}: 'chosen'")
    b = parse_hh_transcript(rejected, f"{where}: 'rejected'")
    prompt, completion_a, completion_b = split_shared_prompt(a, b, where)
    return LabeledComparison(Comparison(prompt, completion_a, completion_b), "A")


def ultrafeedback_row(row: dict, where: str) -> LabeledComparison:
    if isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
        a = parse_conversation(row["chosen"], f"{where}: 'chosen'")
        b = parse_conversation(row["rejected"], f"{where}: 'rejected'")
        if a[0] != b[0] and isinstance(row.get("prompt"), str):
            prompt: list[Message] = [{"role": "user", "content": row["prompt"]}]
            return LabeledComparison(Comparison(prompt, a, b), "A")
        prompt, completion_a, completion_b = split_shared_prompt(a, b, where)
        return LabeledComparison(Comparison(prompt, completion_a, completion_b), "A")
    if all(k in row for k in ("instruction", "chosen_response", "rejected_response")):
        instruction, chosen, rejected = (
            _text(row[k], where, k) for k in ("instruction", "chosen_response", "rejected_response")
        )
        prompt = [{"role": "user", "content": instruction}]
        return LabeledComparison(Comparison(prompt, _reply(chosen), _reply(rejected)), "A")
    raise DataFormatError(
        f"{where}: not an UltraFeedback row: expected 'chosen' and 'rejected' message lists, or "
        f"'instruction', 'chosen_response' and 'rejected_response' (columns: {sorted(row)})"
    )


def helpsteer3_row(row: dict, where: str) -> LabeledComparison:
    context, r1, r2, pref = _columns(row, where, "context", "response1", "response2", "overall_preference")
    prompt = parse_conversation(context, f"{where}: 'context'")
    if isinstance(pref, bool) or not isinstance(pref, int | np.integer) or not -3 <= pref <= 3:
        raise DataFormatError(f"{where}: 'overall_preference' must be an integer in -3..3, got {pref!r}")
    label = "A" if pref < 0 else "B" if pref > 0 else "Tie"
    completions = (_reply(_text(r1, where, "response1")), _reply(_text(r2, where, "response2")))
    return LabeledComparison(Comparison(prompt, *completions), label)


class RowFormat(NamedTuple):
    convert: Callable[[dict, str], LabeledComparison]
    columns: tuple[tuple[str, ...], ...]  # alternatives: the dataset must have every column of one


ROW_FORMATS: dict[str, RowFormat] = {
    "comparison": RowFormat(labeled_comparison_from_json, (("comparison", "label"),)),
    "hh_rlhf": RowFormat(hh_rlhf_row, (("chosen", "rejected"),)),
    "ultrafeedback": RowFormat(
        ultrafeedback_row, (("chosen", "rejected"), ("instruction", "chosen_response", "rejected_response"))
    ),
    "helpsteer3": RowFormat(helpsteer3_row, (("context", "response1", "response2", "overall_preference"),)),
}


class HFComparisonRecords:
    """Random access to a `datasets.Dataset` as records `(where, LabeledComparison)`, converted on read."""

    def __init__(self, ds, label: str, row_format: str):
        if row_format not in ROW_FORMATS:
            raise ValueError(f"unknown row_format {row_format!r}; valid: {sorted(ROW_FORMATS)}")
        self.ds, self.label, self.format = ds, label, ROW_FORMATS[row_format]
        columns = set(getattr(ds, "column_names", None) or [])
        if columns and not any(set(alt) <= columns for alt in self.format.columns):
            needed = " or ".join(str(list(alt)) for alt in self.format.columns)
            raise DataFormatError(
                f"{label}: row_format {row_format!r} needs columns {needed}; it has {sorted(columns)}"
            )

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> ComparisonRecord:
        where = f"{self.label} row {int(i)}"
        return where, self.format.convert(self.ds[int(i)], where)


@dataclass(frozen=True, kw_only=True)
class HFComparisonBuilder(ComparisonBuilder):
    """A Hugging Face dataset (hub name, `save_to_disk` folder, or .jsonl/.parquet file) of comparisons.

    Test set: `test_split` when given (its first `test_size` rows if `test_size > 0`), else
    `test_size` rows held out of `split`. `max_train_rows`: keep that many rows of a `seed` shuffle.
    """

    name: str
    row_format: str = "comparison"
    split: str = "train"
    config_name: str | None = None
    test_split: str | None = None
    max_train_rows: int | None = None

    def __post_init__(self):
        if self.row_format not in ROW_FORMATS:
            raise ValueError(f"unknown row_format {self.row_format!r}; valid: {sorted(ROW_FORMATS)}")

    def _records(self, split: str) -> HFComparisonRecords:
        ds = self.filter(load_hf_dataset(self.name, split=split, config_name=self.config_name))
        return HFComparisonRecords(ds, f"{self.name}[{split}]", self.row_format)

    def filter(self, ds):
        """Hook for subclasses: rows to keep (all by default)."""
        return ds

    def load(self) -> ComparisonSplits:
        records = self._records(self.split)
        if self.max_train_rows is not None and self.max_train_rows < len(records):
            order = np.random.default_rng(self.seed).permutation(len(records))[: self.max_train_rows]
            records = Subset(records, np.sort(order))
        label = f"{self.name}[{self.split}]"
        if self.test_split is None:
            return in_memory_splits(records, test_size=self.test_size, seed=self.seed, label=label, stats={})
        test = self._records(self.test_split)
        if self.test_size:
            test = Subset(test, np.arange(min(self.test_size, len(test))))
        stats = {"data/train_records": len(records), "data/test_records": len(test)}
        return ComparisonSplits(records, test, stats, label)


@dataclass(frozen=True, kw_only=True)
class HHRLHFComparisonBuilder(HFComparisonBuilder):
    name: str = "Anthropic/hh-rlhf"
    row_format: str = "hh_rlhf"
    test_split: str | None = "test"
    test_size: int = 1024


@dataclass(frozen=True, kw_only=True)
class UltraFeedbackComparisonBuilder(HFComparisonBuilder):
    """argilla/ultrafeedback-binarized-preferences (train only): 1024 rows held out."""

    name: str = "argilla/ultrafeedback-binarized-preferences"
    row_format: str = "ultrafeedback"
    test_size: int = 1024


@dataclass(frozen=True, kw_only=True)
class UltraFeedbackH4ComparisonBuilder(HFComparisonBuilder):
    name: str = "HuggingFaceH4/ultrafeedback_binarized"
    row_format: str = "ultrafeedback"
    split: str = "train_prefs"
    test_split: str | None = "test_prefs"


@dataclass(frozen=True, kw_only=True)
class HelpSteer3ComparisonBuilder(HFComparisonBuilder):
    """nvidia/HelpSteer3 preference subset; `keep_ties=False` drops overall_preference == 0 up front."""

    name: str = "nvidia/HelpSteer3"
    row_format: str = "helpsteer3"
    config_name: str | None = "preference"
    test_split: str | None = "validation"
    keep_ties: bool = True

    def filter(self, ds):
        if self.keep_ties or "overall_preference" not in (ds.column_names or []):
            return ds
        return ds.filter(lambda p: p != 0, input_columns="overall_preference")
