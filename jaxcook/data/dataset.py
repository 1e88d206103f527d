"""Supervised datasets: fixed-size batches of datums, in a deterministic order per epoch.

`SupervisedDataset` is what the supervised workflow loops over: `len(ds)` batches per epoch,
`ds.set_epoch(epoch)` then `ds.get_batch(i)` for `i` in `range(len(ds))`.

Exact resume: the order of an epoch is a pure function of `(seed, epoch)`, so `set_epoch(e)` then
`get_batch(i)` returns the same datums in any process, whatever was read before. The last
`len(records) % batch_size` records of an epoch's order are left out of that epoch (drop-last,
so every batch has the same size); another epoch's order leaves out others.

Records are converted to datums when their batch is built. With a skip policy a record that
cannot be trained is dropped, so such a batch holds fewer than `batch_size` datums (possibly none);
`stats()` says how many were dropped, truncated, ...

`StreamingSupervisedDataset` reads a stream (a streaming Hugging Face dataset) forward only: it can
skip ahead to any batch of the current epoch (a resume), but asking for an earlier batch is an
error; `set_epoch` restarts the stream, reshuffled from `(seed, epoch)`.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from jaxcook.data.datum import DatumConverter
from jaxcook.data.errors import DataError
from jaxcook.data.sources import Record
from jaxcook.types import Datum


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of `n` records in `epoch`: a permutation drawn from the seed sequence `[seed, epoch]`."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_stream_seed(seed: int, epoch: int) -> int:
    """A 32-bit shuffle seed for a stream's epoch, derived like `epoch_permutation`."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class SupervisedDataset(ABC):
    """Batches of datums; `len` is the number of batches in an epoch."""

    batch_size: int

    @abstractmethod
    def get_batch(self, i: int) -> list[Datum]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def set_epoch(self, epoch: int) -> None: ...

    def stats(self) -> dict[str, int]:
        """Counters since creation (`data/truncated`, `data/skipped_untrainable`, ...)."""
        return {}


class ConversationDataset(SupervisedDataset):
    """Random-access records (a list, or `HFRecords`) shuffled per epoch and cut into batches."""

    def __init__(
        self,
        records: Sequence[Record],
        convert: DatumConverter,
        *,
        batch_size: int,
        seed: int = 0,
        name: str = "dataset",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(records) < batch_size:
            raise DataError(
                f"{name}: {len(records)} training records is fewer than batch_size={batch_size}, "
                "so an epoch has no batch"
            )
        self.records, self.convert = records, convert
        self.batch_size, self.seed, self.name = batch_size, seed, name
        self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.records) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._order = epoch_permutation(len(self.records), self.seed, self.epoch)

    def batch_indices(self, i: int) -> np.ndarray:
        """Indices into `records` of batch `i` of the current epoch."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name}: batch {i} out of range; an epoch has {len(self)} batches")
        return self._order[i * self.batch_size : (i + 1) * self.batch_size]

    def get_batch(self, i: int) -> list[Datum]:
        rows = [self.records[int(j)] for j in self.batch_indices(i)]
        return self.convert.convert_all(rows)

    def stats(self) -> dict[str, int]:
        return dict(self.convert.counts)


class StreamingSupervisedDataset(SupervisedDataset):
    """A forward-only stream of records; `make_stream(epoch)` restarts it for an epoch.

    `n_batches` is the number of batches in an epoch (a stream does not know its length).
    """

    def __init__(
        self,
        make_stream: Callable[[int], Iterable[Record]],
        convert: DatumConverter,
        *,
        batch_size: int,
        n_batches: int,
        name: str = "stream",
    ):
        if batch_size < 1 or n_batches < 1:
            raise ValueError(f"batch_size and n_batches must be >= 1, got {batch_size}, {n_batches}")
        self.make_stream, self.convert = make_stream, convert
        self.batch_size, self.n_batches, self.name = batch_size, n_batches, name
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.n_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._stream: Iterator[Record] | None = None  # opened on first use
        self._next = 0  # the batch the stream is positioned at

    def get_batch(self, i: int) -> list[Datum]:
        if not 0 <= i < self.n_batches:
            raise IndexError(f"{self.name}: batch {i} out of range; an epoch has {self.n_batches} batches")
        if i < self._next:
            raise DataError(
                f"{self.name}: a streaming dataset only moves forward: batch {i} was asked for after "
                f"batch {self._next - 1} of epoch {self.epoch}; call set_epoch({self.epoch}) to restart "
                "the epoch from its first batch"
            )
        if self._stream is None:
            self._stream = iter(self.make_stream(self.epoch))
        skip = (i - self._next) * self.batch_size
        if skip:
            next(itertools.islice(self._stream, skip - 1, None), None)
        rows = list(itertools.islice(self._stream, self.batch_size))
        if len(rows) < self.batch_size:
            raise DataError(
                f"{self.name}: the stream ended inside batch {i} of epoch {self.epoch} "
                f"(n_batches={self.n_batches} x batch_size={self.batch_size} is more than it holds)"
            )
        self._next = i + 1
        return self.convert.convert_all(rows)

    def stats(self) -> dict[str, int]:
        return dict(self.convert.counts)


def hf_stream(iterable_ds, *, label: str, message_field: str, seed: int, buffer_size: int):
    """`make_stream` for a `datasets.IterableDataset`: shuffled per epoch with a buffer."""
    from jaxcook.data.sources import row_messages

    def make_stream(epoch: int) -> Iterator[Record]:
        shuffled = iterable_ds.shuffle(seed=epoch_stream_seed(seed, epoch), buffer_size=buffer_size)
        for k, row in enumerate(shuffled):
            where = f"{label} (epoch {epoch}, streamed row {k})"
            yield where, row_messages(row, message_field, where)

    return make_stream
