"""Buckets: the sequence lengths `T` and batch sizes `B` a `Batch` may have, so a run compiles a
bounded number of programs (`BucketConfig.num_programs`).

Sequence lengths form a ladder (`seq_ladder`): from `min_len`, each rung `ratio` times the
last, rounded up to a multiple of `multiple`. `ratio=2, multiple=1` is the power-of-two ladder
(`default_seq_buckets`); `ratio=1` gives every multiple of `multiple`; a small ratio gives
multiples of `multiple` at the low end and a geometric ladder above (the step stops binding
once `ratio` x the rung exceeds one more `multiple`), so the number of rungs still grows with
`log(max_len)`. The default for training (`BucketConfig.for_shapes`: ratio 1.25, multiples of
64: 64, 128, ..., 768, then 960, 1216, 1472, ...; 20 rungs up to 4096 where powers of two have 7)
and the packed row length (up to `PACK_ROWS` x the longest datum) were chosen by
`python -m benchmarks.packing`, which prints the padding waste, the shapes used and the program
bound of each option on the `sft` recipe's data: packed waste 14.6% (ratio 1.25, rows up to 2x)
vs 22.3% (ratio 1.5) and 40.7% (powers of two), padded 37.7% vs 43.7% (powers of two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SEQ_RATIO = 1.25  # measured (module doc): packed sft waste 14.6% vs 22.3% at 1.5, 40.7% at 2
SEQ_MULTIPLE = 64
# Packed rows may hold up to PACK_ROWS x max_length tokens: a row of a longest datum packs
# nothing beside it, and the sft data (mean 144 of max 256 tokens) packs 2-3 chats per 512 row.
PACK_ROWS = 2


def seq_ladder(
    max_len: int, *, min_len: int = 64, ratio: float = SEQ_RATIO, multiple: int = SEQ_MULTIPLE
) -> tuple[int, ...]:
    """`min_len`, then each rung `ratio` x the last (unrounded), rounded up to a multiple of
    `multiple` and strictly increasing, up to `max_len` rounded up to a multiple of 128 (TPU
    tiles): `seq_ladder(512, ratio=1.5) == (64, 128, 192, 256, 384, 512)`; at most
    `(max - min) / multiple + 2` rungs, about `log(max / min) / log(ratio)` where the step does
    not bind."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if not (isinstance(ratio, int | float) and ratio >= 1):
        raise ValueError(f"seq bucket ratio must be a number >= 1, got {ratio!r}")
    if not (isinstance(multiple, int) and multiple >= 1):
        raise ValueError(f"seq bucket multiple must be an int >= 1, got {multiple!r}")
    top = -(-max_len // 128) * 128 if max_len > min_len else min_len
    sizes, size, t = [], min_len, float(min_len)
    while size < top:
        sizes.append(size)
        t *= ratio
        size = max(math.ceil(t / multiple - 1e-9) * multiple, size + multiple)
    return (*sizes, top)


def default_seq_buckets(max_seq_len: int, *, min_len: int = 64) -> tuple[int, ...]:
    """Powers of two from `min_len`, then `max_seq_len` rounded up to a multiple of 128 (TPU tiles).

    `default_seq_buckets(3000) == (64, 128, 256, 512, 1024, 2048, 3072)`.
    """
    return seq_ladder(max_seq_len, min_len=min_len, ratio=2, multiple=1)


def default_batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two from 1, then `max_batch_size` itself: `default_batch_buckets(48) == (1, ..., 32, 48)`."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return (*sizes, max_batch_size)


def device_batch_buckets(batch_size: int, devices: int) -> tuple[int, ...]:
    """Powers of two up to `batch_size`, each a multiple of the device count (rows split evenly)."""
    sizes = {-(-b // devices) * devices for b in default_batch_buckets(batch_size)}
    return tuple(sorted(sizes))


@dataclass(frozen=True, kw_only=True)
class BucketConfig:
    """Allowed sequence lengths `T` and batch sizes `B`; both sorted, strictly increasing."""

    seq_buckets: tuple[int, ...] = default_seq_buckets(4096)
    batch_buckets: tuple[int, ...] = default_batch_buckets(64)
    # Scored positions per row, as fractions of T (see `make_batch`); () unembeds every position.
    score_fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)

    def __post_init__(self):
        for name in ("seq_buckets", "batch_buckets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
            check_buckets(name, getattr(self, name))
        fractions = tuple(float(f) for f in self.score_fractions)
        if list(fractions) != sorted(set(fractions)) or not all(0 < f < 1 for f in fractions):
            raise ValueError(
                f"BucketConfig.score_fractions must be strictly increasing in (0, 1), got {fractions}"
            )
        object.__setattr__(self, "score_fractions", fractions)

    @classmethod
    def for_shapes(
        cls,
        max_length: int,
        batch_size: int,
        *,
        devices: int = 1,
        pack: bool = False,
        ratio: float = SEQ_RATIO,
        multiple: int = SEQ_MULTIPLE,
    ) -> BucketConfig:
        """Buckets for datums of at most `max_length` tokens and calls of at most `batch_size`:
        `seq_ladder` up to `max_length` (`PACK_ROWS` x that when packing), power-of-two batch
        sizes that split over `devices`."""
        top = max_length * (PACK_ROWS if pack else 1)
        return cls(
            seq_buckets=seq_ladder(top, min_len=min(64, max_length), ratio=ratio, multiple=multiple),
            batch_buckets=device_batch_buckets(batch_size, devices),
        )

    @property
    def num_programs(self) -> int:
        """The most `(B, T, P)` shapes a run can compile: every (B, T), scored in full or at
        one of the `score_fractions`; `len(batch_buckets) x len(seq_buckets) x (1 + fractions)`."""
        return len(bucket_shapes(self)) * (1 + len(self.score_fractions))


def bucket_shapes(config: BucketConfig) -> list[tuple[int, int]]:
    """Every `(B, T)` a `Batch` built with `config` can have (padding or packing)."""
    return [(b, t) for b in config.batch_buckets for t in config.seq_buckets]


def check_buckets(name: str, buckets: Sequence[int]) -> None:
    if not all(isinstance(x, int | np.integer) and x > 0 for x in buckets) or list(buckets) != sorted(
        set(buckets)
    ):
        raise ValueError(f"BucketConfig.{name} must be strictly increasing positive ints, got {buckets}")


def round_up(n: int, buckets: Sequence[int]) -> int | None:
    """Smallest bucket >= n, or None when n exceeds the largest."""
    i = int(np.searchsorted(np.asarray(buckets), n, side="left"))
    return int(buckets[i]) if i < len(buckets) else None
