"""Where conversations come from: JSONL files and Hugging Face `datasets` (hub name or local copy).

A source yields *records* `(where, messages)`: `where` names the record in errors and logs
(`path:line`, `name[split] row i`), `messages` is the raw message list, checked by
`jaxcook.data.messages` when it is converted.

- JSONL: one `{"messages": [{"role", "content"}, ...]}` object per line (blank lines ignored).
  The whole file is checked on reading, so a bad line fails fast with its path and line number;
  with `on_bad_line="skip"` bad lines are dropped and counted instead.
- Hugging Face: `datasets.load_dataset(name, split=..., streaming=...)`, or a local folder
  written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a local .jsonl/.json/.parquet
  file. Rows are checked lazily, when their batch is built (a hub dataset can hold millions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple

from jaxcook.data.errors import DataFormatError, DataSourceError
from jaxcook.data.messages import parse_record
from jaxcook.renderers import Message

Record = tuple[str, Any]  # (where, raw messages)


class JsonlConversations(NamedTuple):
    records: list[tuple[str, list[Message]]]
    bad_lines_skipped: int


def read_conversations_jsonl(
    path: str | Path, *, on_bad_line: Literal["raise", "skip"] = "raise", message_field: str = "messages"
) -> JsonlConversations:
    """Every conversation of a JSONL file, checked; `where` of each record is `path:line`."""
    if on_bad_line not in ("raise", "skip"):
        raise ValueError(f"on_bad_line must be 'raise' or 'skip', got {on_bad_line!r}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataSourceError(f"{path}: no such file (expected a JSONL file of conversations)")
    records, skipped = [], 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                messages = _parse_line(raw, where, message_field)
            except DataFormatError:
                if on_bad_line == "raise":
                    raise
                skipped += 1
                continue
            if messages is not None:
                records.append((where, messages))
    return JsonlConversations(records, skipped)


def _parse_line(raw: bytes, where: str, message_field: str) -> list[Message] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: not UTF-8 ({e})") from e
    if not text.strip():
        return None
    try:
        record = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{where}: invalid JSON: {e.msg} at column {e.colno}") from e
    return parse_record(record, where, message_field=message_field)


_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_hf_dataset(
    name_or_path: str, *, split: str = "train", streaming: bool = False, config_name: str | None = None
):
    """A `datasets.Dataset` (or `IterableDataset` when streaming) from the hub or a local copy."""
    import datasets

    path = Path(name_or_path).expanduser()
    try:
        if path.is_dir() and _is_saved_dataset(path):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataSourceError(f"{path}: no split {split!r}; splits: {sorted(ds)}")
                ds = ds[split]
            return ds.to_iterable_dataset() if streaming else ds
        if path.is_file():
            if path.suffix not in _FILE_BUILDERS:
                raise DataSourceError(
                    f"{path}: unsupported file type; expected one of {sorted(_FILE_BUILDERS)}"
                )
            return datasets.load_dataset(
                _FILE_BUILDERS[path.suffix], data_files=str(path), split="train", streaming=streaming
            )
        return datasets.load_dataset(name_or_path, config_name, split=split, streaming=streaming)
    except DataSourceError:
        raise
    except Exception as e:  # the hub client raises many types (ConnectionError, HfHubHTTPError, ...)
        raise DataSourceError(
            f"could not load Hugging Face dataset {name_or_path!r} (split {split!r}): "
            f"{type(e).__name__}: {e}. The hub may be unreachable from this machine (set "
            "HF_HUB_OFFLINE=1 to fail fast); pass a local copy instead: a folder written by "
            "Dataset.save_to_disk, a .jsonl/.parquet file, or a JSONL conversation file "
            "(ConversationFileBuilder)."
        ) from e


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def check_message_column(ds, label: str, message_field: str) -> None:
    """Fail early when the dataset's columns are known and lack `message_field`."""
    columns = getattr(ds, "column_names", None)
    if columns is not None and message_field not in columns:
        raise DataFormatError(f"{label}: no column {message_field!r}; columns: {sorted(columns)}")


def row_messages(row: dict, message_field: str, where: str) -> Any:
    if message_field not in row:
        raise DataFormatError(f"{where}: no column {message_field!r}; columns: {sorted(row)}")
    return row[message_field]


class HFRecords:
    """Random access to a (non-streaming) `datasets.Dataset` as records `(where, messages)`."""

    def __init__(self, ds, label: str, message_field: str = "messages"):
        check_message_column(ds, label, message_field)
        self.ds = ds.select_columns([message_field])
        self.label, self.message_field = label, message_field

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Record:
        where = f"{self.label} row {int(i)}"
        return where, row_messages(self.ds[int(i)], self.message_field, where)
