"""Dataset builders: one frozen config per source, `build(renderer, ...)` -> train batches + test datums.

    data = ConversationFileBuilder(path="chats.jsonl", test_size=64).build(
        renderer, batch_size=8, max_length=256)
    data.train.set_epoch(0); batch = data.train.get_batch(0)   # list[Datum]
    data.test      # list[Datum] or None
    data.stats     # {"data/train_records": ..., "data/bad_lines_skipped": ..., ...}

Common options (every builder): `seed` (split and epoch order), `on_bad_line` and `on_untrainable`
("raise" or "skip" and count, see `DatumPolicy`), `too_long` ("truncate" on the right, or
"drop" and count), `reduction` ("mean": per-example token-mean weights; "none"). `train_on_what`
is given to `build` (None = the builder's default, e.g. `LAST_ASSISTANT_MESSAGE` for Tulu 3).

Splits: an in-memory source is shuffled with `seed` once and its first `test_size` records are
the test set (disjoint from train); a Hugging Face source can name a `test_split` instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from jaxcook.data.dataset import (
    ConversationDataset,
    StreamingSupervisedDataset,
    SupervisedDataset,
    hf_stream,
)
from jaxcook.data.datum import DatumConverter, DatumPolicy, OnBad, Reduction, TooLong
from jaxcook.data.errors import DataError, DataSourceError
from jaxcook.data.sources import HFRecords, Record, load_hf_dataset, read_conversations_jsonl, row_messages
from jaxcook.renderers import Renderer, TrainOnWhat
from jaxcook.types import Datum


class SupervisedData(NamedTuple):
    train: SupervisedDataset
    test: list[Datum] | None
    stats: dict[str, int]
    test_groups: list[str] | None = None  # a group name per test datum, for per-group metrics


class Subset:
    """A read-only view `records[indices]`."""

    def __init__(self, records: Sequence[Record], indices: np.ndarray):
        self.records, self.indices = records, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Record:
        return self.records[int(self.indices[i])]


def split_records(
    records: Sequence[Record], *, test_size: int, seed: int, label: str
) -> tuple[Subset, Subset]:
    """(train, test): the first `test_size` records of a `seed` shuffle are the test set."""
    if not 0 <= test_size < len(records):
        raise DataError(
            f"{label}: test_size={test_size} must be in [0, {len(records)}) ({len(records)} records)"
        )
    order = np.random.default_rng(seed).permutation(len(records))
    return Subset(records, order[test_size:]), Subset(records, order[:test_size])


@dataclass(frozen=True, kw_only=True)
class ChatDatasetBuilder(ABC):
    seed: int = 0
    on_bad_line: OnBad = "raise"
    on_untrainable: OnBad = "raise"
    too_long: TooLong = "truncate"
    reduction: Reduction = "mean"

    default_train_on_what: ClassVar[TrainOnWhat] = TrainOnWhat.ALL_ASSISTANT_MESSAGES

    def build(
        self,
        renderer: Renderer,
        *,
        batch_size: int,
        max_length: int | None,
        train_on_what: TrainOnWhat | str | None = None,
    ) -> SupervisedData:
        policy = DatumPolicy(
            max_length=max_length,
            train_on_what=train_on_what or self.default_train_on_what,
            reduction=self.reduction,
            too_long=self.too_long,
            on_bad_record=self.on_bad_line,
            on_untrainable=self.on_untrainable,
        )
        return self._build(renderer, policy, batch_size)

    @abstractmethod
    def _build(self, renderer: Renderer, policy: DatumPolicy, batch_size: int) -> SupervisedData: ...


def _test_datums(records, renderer, policy, stats: dict[str, int]) -> list[Datum]:
    convert = DatumConverter(renderer, policy)
    test = convert.convert_all(records)
    stats.update({k.replace("data/", "data/test_", 1): v for k, v in convert.counts.items()})
    return test


@dataclass(frozen=True, kw_only=True)
class InMemoryChatBuilder(ChatDatasetBuilder):
    """A source small enough to hold as records; subclasses say how to load them."""

    test_size: int = 0

    @abstractmethod
    def load_records(self) -> tuple[Sequence[Record], dict[str, int], str]:
        """(records, source stats, label for errors)."""

    def _build(self, renderer, policy, batch_size) -> SupervisedData:
        records, stats, label = self.load_records()
        train_records, test_records = split_records(
            records, test_size=self.test_size, seed=self.seed, label=label
        )
        stats = {**stats, "data/train_records": len(train_records), "data/test_records": len(test_records)}
        test = _test_datums(test_records, renderer, policy, stats) if self.test_size else None
        train = ConversationDataset(
            train_records, DatumConverter(renderer, policy), batch_size=batch_size, seed=self.seed, name=label
        )
        stats["data/train_batches"] = len(train)
        return SupervisedData(train, test, stats)


@dataclass(frozen=True, kw_only=True)
class ConversationFileBuilder(InMemoryChatBuilder):
    """A JSONL file of `{"messages": [...]}` conversations."""

    path: str
    message_field: str = "messages"

    def load_records(self):
        read = read_conversations_jsonl(
            self.path, on_bad_line=self.on_bad_line, message_field=self.message_field
        )
        return read.records, {"data/bad_lines_skipped": read.bad_lines_skipped}, str(self.path)


TINKER_CONVERSATIONS_MEMBER = "tinker_cookbook/example_data/conversations.jsonl"


@dataclass(frozen=True, kw_only=True)
class TinkerConversationsBuilder(InMemoryChatBuilder):
    """The 128 example chats of tinker-cookbook 0.6.1 (Apache-2.0), fetched from PyPI."""

    test_size: int = 16

    def load_records(self):
        from jaxcook import assets

        path = assets.fetch_file("tinker-cookbook-example-data", TINKER_CONVERSATIONS_MEMBER)
        read = read_conversations_jsonl(path, on_bad_line=self.on_bad_line)
        return read.records, {"data/bad_lines_skipped": read.bad_lines_skipped}, "tinker_conversations"


@dataclass(frozen=True, kw_only=True)
class HFChatBuilder(ChatDatasetBuilder):
    """A Hugging Face dataset with a column of message lists (hub name or local copy).

    Test set: the whole `test_split` when given (its first `test_size` rows if `test_size > 0`),
    else `test_size` rows held out of `split`. Streaming reads `split` forward only, shuffled per
    epoch through a `shuffle_buffer`; the epoch length is `num_train_rows` (or the split size the
    dataset reports) // batch_size.
    """

    name: str
    split: str = "train"
    message_field: str = "messages"
    config_name: str | None = None
    test_split: str | None = None
    test_size: int = 0
    streaming: bool = False
    num_train_rows: int | None = None
    shuffle_buffer: int = 10_000

    def _load(self, split: str):
        return load_hf_dataset(self.name, split=split, streaming=self.streaming, config_name=self.config_name)

    def _label(self, split: str) -> str:
        return f"{self.name}[{split}]"

    def _build(self, renderer, policy, batch_size) -> SupervisedData:
        if self.streaming:
            return self._build_streaming(renderer, policy, batch_size)
        records = HFRecords(self._load(self.split), self._label(self.split), self.message_field)
        if self.test_split is not None:
            test_records = HFRecords(
                self._load(self.test_split), self._label(self.test_split), self.message_field
            )
            if self.test_size:
                test_records = Subset(test_records, np.arange(min(self.test_size, len(test_records))))
            train_records = records
        else:
            train_records, test_records = split_records(
                records, test_size=self.test_size, seed=self.seed, label=self._label(self.split)
            )
        stats = {"data/train_records": len(train_records), "data/test_records": len(test_records)}
        has_test = self.test_split is not None or self.test_size > 0
        test = _test_datums(test_records, renderer, policy, stats) if has_test else None
        train = ConversationDataset(
            train_records,
            DatumConverter(renderer, policy),
            batch_size=batch_size,
            seed=self.seed,
            name=self._label(self.split),
        )
        stats["data/train_batches"] = len(train)
        return SupervisedData(train, test, stats)

    def _build_streaming(self, renderer, policy, batch_size) -> SupervisedData:
        ds = self._load(self.split)
        label = self._label(self.split)
        stats: dict[str, int] = {}
        test = None
        held_out = 0
        if self.test_split is not None:
            test_ds = self._load(self.test_split)
            if self.test_size:
                test_ds = test_ds.take(self.test_size)
            test_label = self._label(self.test_split)
        elif self.test_size:
            test_ds, ds, held_out, test_label = (
                ds.take(self.test_size),
                ds.skip(self.test_size),
                self.test_size,
                label,
            )
        if self.test_split is not None or self.test_size:
            rows = [
                (f"{test_label} row {k}", row_messages(r, self.message_field, f"{test_label} row {k}"))
                for k, r in enumerate(test_ds)
            ]
            stats["data/test_records"] = len(rows)
            test = _test_datums(rows, renderer, policy, stats)
        n_rows = self.num_train_rows if self.num_train_rows is not None else _reported_rows(ds, self.split)
        if n_rows is None:
            raise DataSourceError(f"{label}: a streamed split does not report its size; set num_train_rows")
        n_rows -= held_out if self.num_train_rows is None else 0
        stream = hf_stream(
            ds, label=label, message_field=self.message_field, seed=self.seed, buffer_size=self.shuffle_buffer
        )
        train = StreamingSupervisedDataset(
            stream,
            DatumConverter(renderer, policy),
            batch_size=batch_size,
            n_batches=n_rows // batch_size,
            name=label,
        )
        stats.update({"data/train_records": n_rows, "data/train_batches": len(train)})
        return SupervisedData(train, test, stats)


def _reported_rows(ds, split: str) -> int | None:
    splits = getattr(getattr(ds, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return getattr(info, "num_examples", None) or None


@dataclass(frozen=True, kw_only=True)
class NoRobotsBuilder(HFChatBuilder):
    """HuggingFaceH4/no_robots: 9.5k human-written chats; its own test split."""

    name: str = "HuggingFaceH4/no_robots"
    test_split: str | None = "test"


@dataclass(frozen=True, kw_only=True)
class Tulu3Builder(HFChatBuilder):
    """allenai/tulu-3-sft-mixture (939k chats): 1024 held out of train; trains the last reply."""

    name: str = "allenai/tulu-3-sft-mixture"
    test_size: int = 1024

    default_train_on_what: ClassVar[TrainOnWhat] = TrainOnWhat.LAST_ASSISTANT_MESSAGE
