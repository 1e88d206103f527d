"""Comparison dataset builders: one frozen config per source -> train/test comparisons -> DPO or RM data.

    builder = ComparisonFileBuilder(path="prefs.jsonl", test_size=64)
    dpo = builder.build_dpo(renderer, batch_size=8, max_length=512)     # SupervisedData
    dpo.train.set_epoch(0); batch = dpo.train.get_batch(0)   # [chosen_0, rejected_0, chosen_1, ...]
    dpo.test                                                  # interleaved pairs, or None
    rm = builder.build_reward_model(ComparisonRenderer(renderer), batch_size=8, max_length=1024)

Common options: `seed` (test split and epoch order), `test_size` (comparisons held out: the
first `test_size` of a `seed` shuffle, disjoint from train), `on_bad_row` ("raise", or "skip" and
count), `too_long` (DPO: "truncate" on the right, or "drop" the pair; a reward-model example is
always dropped, since cutting it would remove its label). Counts are in `SupervisedData.stats`
(`data/train_records`, `data/skipped_tie`, ...) and in `train.stats()` as batches are built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from jaxcook.data.builders import SupervisedData, split_records
from jaxcook.data.datum import OnBad, TooLong
from jaxcook.preference.data import read_comparisons_jsonl
from jaxcook.preference.dpo import DPODataset, PairConverter
from jaxcook.preference.reward_model import ComparisonRenderer, ComparisonRMDataset, SwapMode
from jaxcook.preference.types import ComparisonRecord
from jaxcook.renderers import Renderer


class ComparisonSplits(NamedTuple):
    train: Sequence[ComparisonRecord]
    test: Sequence[ComparisonRecord] | None
    stats: dict[str, int]
    label: str  # names the source in errors


@dataclass(frozen=True, kw_only=True)
class ComparisonBuilder(ABC):
    seed: int = 0
    test_size: int = 0
    on_bad_row: OnBad = "raise"
    too_long: TooLong = "truncate"

    @abstractmethod
    def load(self) -> ComparisonSplits:
        """Train and test comparisons (records `(where, LabeledComparison)`, possibly read lazily)."""

    def group_of(self, where: str) -> str:
        """The group a record counts in for per-group test metrics (one group by default)."""
        return "all"

    def build_dpo(self, renderer: Renderer, *, batch_size: int, max_length: int | None) -> SupervisedData:
        """`train`: a `DPODataset` of `batch_size` pairs per batch; `test`: interleaved pairs or None."""
        splits = self.load()
        convert = PairConverter(
            renderer, max_length=max_length, too_long=self.too_long, on_bad_row=self.on_bad_row
        )
        stats = dict(splits.stats)
        test = None
        if splits.test is not None:
            test_convert = PairConverter(
                renderer, max_length=max_length, too_long=self.too_long, on_bad_row=self.on_bad_row
            )
            test = test_convert.convert(splits.test)
            stats.update({k.replace("data/", "data/test_", 1): v for k, v in test_convert.counts.items()})
        train = DPODataset(splits.train, convert, batch_size=batch_size, seed=self.seed, name=splits.label)
        stats["data/train_batches"] = len(train)
        return SupervisedData(train, test, stats)

    def build_reward_model(
        self,
        comparison_renderer: ComparisonRenderer,
        *,
        batch_size: int,
        max_length: int | None,
        swap: SwapMode = "random",
    ) -> SupervisedData:
        """Reward-model datums; the test set shows every comparison in both orders, each datum
        in the group `group_of(where)` of its record."""
        splits = self.load()
        stats = dict(splits.stats)
        test = groups = None
        if splits.test is not None and len(splits.test):
            test_ds = ComparisonRMDataset(
                splits.test,
                comparison_renderer,
                batch_size=len(splits.test),
                max_length=max_length,
                swap="both",
                seed=self.seed,
                on_bad_row=self.on_bad_row,
                name=f"{splits.label} (test)",
            )
            test, wheres = test_ds.get_batch_with_wheres(0)
            groups = [self.group_of(w) for w in wheres]
            stats.update({k.replace("data/", "data/test_", 1): v for k, v in test_ds.stats().items()})
        train = ComparisonRMDataset(
            splits.train,
            comparison_renderer,
            batch_size=batch_size,
            max_length=max_length,
            swap=swap,
            seed=self.seed,
            on_bad_row=self.on_bad_row,
            name=splits.label,
        )
        stats["data/train_batches"] = len(train)
        return SupervisedData(train, test, stats, groups)


def in_memory_splits(
    records: Sequence[ComparisonRecord], *, test_size: int, seed: int, label: str, stats: dict[str, int]
) -> ComparisonSplits:
    """Hold out the first `test_size` records of a `seed` shuffle (no test set when 0)."""
    train, test = split_records(records, test_size=test_size, seed=seed, label=label)
    stats = {**stats, "data/train_records": len(train), "data/test_records": len(test)}
    return ComparisonSplits(train, test if test_size else None, stats, label)


@dataclass(frozen=True, kw_only=True)
class ComparisonFileBuilder(ComparisonBuilder):
    """A JSONL file of labeled comparisons (format in `jaxcook.preference.data`); optional test file."""

    path: str
    test_path: str | None = None

    def load(self) -> ComparisonSplits:
        read = read_comparisons_jsonl(self.path, on_bad_row=self.on_bad_row)
        stats = {"data/bad_rows_skipped": read.bad_rows_skipped}
        if self.test_path is None:
            return in_memory_splits(
                read.records, test_size=self.test_size, seed=self.seed, label=str(self.path), stats=stats
            )
        test = read_comparisons_jsonl(self.test_path, on_bad_row=self.on_bad_row)
        test_records = test.records[: self.test_size] if self.test_size else test.records
        stats.update(
            {
                "data/test_bad_rows_skipped": test.bad_rows_skipped,
                "data/train_records": len(read.records),
                "data/test_records": len(test_records),
            }
        )
        return ComparisonSplits(read.records, test_records, stats, str(self.path))
