"""Batching: a list of `Datum`s becomes one `Batch` of bucketed `[B, T]` arrays, and back.

Two layouts, both one row per `B` index:
- padding (`pack=False`): datum i sits alone in row i, left-aligned, zeros after it;
- packing (`pack=True`): datums are placed first-fit-decreasing into rows; each keeps its own
  positions (restarting at 0) and its own segment id, so attention can be masked per datum.

Packing is exact (the default of `LocalService` and of the recipes' `model.pack`): attention
sees only its own segment, positions restart, a MoE router's load-balancing loss sums over the
call's valid tokens (not per row) and a sliding window within a segment counts positions (its
slots are consecutive); tests check packed == padded for each. It is off for custom losses
(`forward_backward_custom`, `tinker_custom`), whose function may reduce over rows.

With `share_prefix=True` either layout places groups instead of datums: datums that start alike
(an RL group, a DPO pair; `engine.shared_prefix`) share one segment, the common start held once
and each datum's rest on a branch of its own (`Batch.branch_ids_BT`). When no datums share,
the batch is the plain layout (no branch ids), so a run compiles at most twice
`config.num_programs` programs: with and without branch ids.

Shapes round up to the sizes in `BucketConfig` (`engine.buckets`) so that a run compiles at most
`config.num_programs` programs per (loss, set of input keys, K): one per `(B, T)` and per
scored-position count `P` (every slot, or one of the `score_fractions` of T; see `make_batch`).
The number of datum slots `D` (the per-datum axis DPO reduces over) is not a bucket axis: it is
a function of `(B, T)`: `D = B` when padding (one datum per row) and `D = B * T` when packing
(a datum has at least one token, so a `[B, T]` batch holds at most `B * T` of them; so does a
shared-prefix batch, padded or packed).
`datum_valid_D` marks the real datums; `datum_ids_BT` indexes it (and the input list).

All arrays are host numpy arrays; the caller moves the `Batch` (a pytree) to devices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import numpy as np

from jaxcook.engine.buckets import (  # noqa: F401  (BucketConfig and the ladders: imported from here too)
    BucketConfig,
    bucket_shapes,
    check_buckets,
    default_batch_buckets,
    default_seq_buckets,
    round_up,
)
from jaxcook.engine.shared_prefix import Group, plan_groups
from jaxcook.types import Datum

TARGET_KEY = "target_tokens"


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Batch:
    """Bucketed arrays for one forward/backward call (a JAX pytree; every field is data).

    tokens_BT       int32   input token ids, 0 on padding
    positions_BT    int32   position within the token's own datum (restarts at 0 per datum;
                            a branch continues from its shared prefix's length)
    segment_ids_BT  int32   0 = padding, k = k-th datum of the row (1-based)
    datum_ids_BT    int32   index of the datum in the input list, -1 on padding
    mask_BT         float32 1 on real positions, 0 on padding
    targets_BT      int32   `[B, T]` target ids, or `[B, T, K]` for soft (top-K) targets
    inputs          dict of float32 `[B, T]` / `[B, T, K]`: every other loss_fn_input, 0 on padding
    datum_valid_D   float32 `[D]`, 1 for datum slots 0..N-1 (real datums), 0 after; see module doc
    score_idx_BP    int32   `[B, P]`: the slots of row b whose log-prob is computed, padded with T;
                            P = 0 (shape `[B, 0]`) means every slot
    branch_ids_BT   int32   shared prefixes only (else None): 0 on a group's shared prefix and
                            on unshared datums, k on the k-th member's own slots
    """

    tokens_BT: np.ndarray
    positions_BT: np.ndarray
    segment_ids_BT: np.ndarray
    datum_ids_BT: np.ndarray
    mask_BT: np.ndarray
    targets_BT: np.ndarray
    inputs: dict[str, np.ndarray]
    datum_valid_D: np.ndarray
    score_idx_BP: np.ndarray
    branch_ids_BT: np.ndarray | None = None


@dataclass(frozen=True)
class Layout:
    """Where each datum went: datum i occupies `[rows_N[i], starts_N[i] : starts_N[i] + lengths_N[i]]`.

    With shared prefixes, datum i's first `shared_N[i]` positions are the slots
    `[rows_N[i], prefix_starts_N[i] : prefix_starts_N[i] + shared_N[i]]` (its group owner's), and
    its own slots `starts_N[i] ...` hold only the `lengths_N[i] - shared_N[i]` after them.
    """

    rows_N: np.ndarray
    starts_N: np.ndarray
    lengths_N: np.ndarray
    batch_size: int
    seq_len: int
    shared_N: np.ndarray | None = None
    prefix_starts_N: np.ndarray | None = None

    @property
    def num_datums(self) -> int:
        return len(self.lengths_N)


def unbatch(layout: Layout, array_BT) -> list[np.ndarray]:
    """Cut a per-token output `[B, T, ...]` back into one array `[length_i, ...]` per datum."""
    arr = np.asarray(array_BT)
    if arr.shape[:2] != (layout.batch_size, layout.seq_len):
        raise ValueError(
            f"unbatch: array has shape {arr.shape}, expected leading dims "
            f"{(layout.batch_size, layout.seq_len)} from the layout"
        )
    rows, starts, lengths = layout.rows_N.tolist(), layout.starts_N.tolist(), layout.lengths_N.tolist()
    if layout.shared_N is None:
        return [arr[r, s : s + n] for r, s, n in zip(rows, starts, lengths)]
    out = []
    shared, prefix_starts = layout.shared_N.tolist(), layout.prefix_starts_N.tolist()
    for r, s, n, k, p in zip(rows, starts, lengths, shared, prefix_starts):
        out.append(np.concatenate([arr[r, p : p + k], arr[r, s : s + n - k]]) if k else arr[r, s : s + n])
    return out


def _check_keys(data: Sequence[Datum]) -> list[str]:
    """All datums must share one set of loss_fn_input keys and per-key trailing shapes."""
    first = data[0].loss_fn_inputs
    keys = sorted(first)
    trailing = {k: first[k].shape[1:] for k in keys}
    if TARGET_KEY not in first:
        raise ValueError(f"datum 0 has no {TARGET_KEY!r} in loss_fn_inputs (keys: {keys})")
    for i, d in enumerate(data):
        got = sorted(d.loss_fn_inputs)
        if got != keys:
            raise ValueError(
                f"datum {i} has loss_fn_inputs keys {got}, but datum 0 has {keys}; "
                "all datums in one batch must carry the same keys"
            )
        for k in keys:
            shape = d.loss_fn_inputs[k].shape[1:]
            if shape != trailing[k]:
                kind = " (a batch holds either 1-D or [N, K] soft targets, not both)"
                raise ValueError(
                    f"datum {i}: loss_fn_inputs[{k!r}] has per-token shape {shape}, datum 0 has "
                    f"{trailing[k]}{kind if k == TARGET_KEY else ''}"
                )
    return keys


def _first_fit_decreasing(lengths_N: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Place datums (longest first, ties by index) into the first row with room; -> rows, starts, #rows."""
    n = len(lengths_N)
    order = np.argsort(-lengths_N, kind="stable")
    used_R = np.zeros(n, np.int64)  # tokens used per row; at most n rows
    rows_N = np.empty(n, np.int64)
    starts_N = np.empty(n, np.int64)
    num_rows = 0
    for i in order.tolist():
        length = int(lengths_N[i])
        fits = np.flatnonzero(used_R[:num_rows] + length <= seq_len)
        r = int(fits[0]) if len(fits) else num_rows
        num_rows = max(num_rows, r + 1)
        rows_N[i], starts_N[i] = r, used_R[r]
        used_R[r] += length
    return rows_N, starts_N, num_rows


def _place(
    lengths_N: np.ndarray, pack: bool, seq_buckets: Sequence[int], batch_buckets: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Choose (B, T) and each datum's (row, start)."""
    n = len(lengths_N)
    longest = int(lengths_N.max())
    t_min = round_up(longest, seq_buckets)
    if t_min is None:
        i = int(np.argmax(lengths_N))
        raise ValueError(
            f"datum {i} has length {longest}, longer than the largest sequence bucket "
            f"{seq_buckets[-1]}; truncate it in the data layer"
        )
    if not pack:
        b = round_up(n, batch_buckets)
        if b is None:
            raise ValueError(
                f"{n} datums exceed the largest batch bucket {batch_buckets[-1]} (padding: one datum "
                "per row); split them into smaller microbatches"
            )
        return np.arange(n), np.zeros(n, np.int64), b, t_min
    # Packing: try every T that fits the longest datum; keep the smallest B*T (ties: smaller T,
    # since attention cost grows with T). A 1-row packing cannot get cheaper with a longer T.
    best = None
    for t in (s for s in seq_buckets if s >= t_min):
        if best is not None and t >= best[2] * best[3]:
            break
        rows_N, starts_N, num_rows = _first_fit_decreasing(lengths_N, t)
        b = round_up(num_rows, batch_buckets)
        if b is not None and (best is None or b * t < best[2] * best[3]):
            best = (rows_N, starts_N, b, t)
        if num_rows == 1:
            break
    if best is None:
        raise ValueError(
            f"{n} datums ({int(lengths_N.sum())} tokens) do not pack into the largest bucket "
            f"B={batch_buckets[-1]} x T={seq_buckets[-1]}; split them into smaller microbatches"
        )
    return best


def call_parts(lengths_N: Sequence[int], pack: bool, config: BucketConfig) -> list[slice]:
    """Consecutive parts of one call's datums that each fit one batch of `config`: at most the
    largest batch bucket of datums when padding; when packing, the longest runs whose
    first-fit-decreasing placement into rows of the largest T needs at most the largest B rows
    (so a call that fits stays whole; a run of B datums always fits, one per row)."""
    rows, t = max(config.batch_buckets), max(config.seq_buckets)
    lengths = np.asarray(lengths_N, np.int64)
    n, parts, start = len(lengths), [], 0
    fits = lambda end: _first_fit_decreasing(lengths[start:end], t)[2] <= rows
    while start < n:
        lo, hi = min(start + rows, n), n  # lo fits; find the longest fitting run (binary search)
        if pack:
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        parts.append(slice(start, lo))
        start = lo
    return parts


def _score_index(scored_dest: np.ndarray, b: int, t: int, fractions: Sequence[float]) -> np.ndarray:
    """`[B, P]` slots per row from the flat `[B*T]` indices of the scored positions: P is the
    smallest `ceil(f * T)` (f in `fractions`) that holds the fullest row, or 0 (every slot)."""
    rows, cols = np.divmod(np.sort(scored_dest), t)
    fullest = int(np.bincount(rows, minlength=b).max()) if len(rows) else 0
    p = next((size for f in fractions if (size := math.ceil(round(f * t, 6))) >= fullest), t)
    if p >= t:
        return np.zeros((b, 0), np.int32)
    idx = np.full((b, p), t, np.int32)
    first = np.searchsorted(rows, rows, side="left")  # rows are sorted: index of the row's first
    idx[rows, np.arange(len(rows)) - first] = cols
    return idx


def check_data(
    data: Sequence[Datum], seq_buckets: Sequence[int], batch_buckets: Sequence[int]
) -> tuple[list[str], np.ndarray]:
    """`make_batch`'s input checks (one-line errors); the datums' loss-input keys and lengths [N]."""
    if not data:
        raise ValueError("make_batch needs at least one datum")
    check_buckets("seq_buckets", seq_buckets)
    check_buckets("batch_buckets", batch_buckets)
    keys = _check_keys(data)
    lengths_N = np.fromiter((d.length for d in data), np.int64, count=len(data))
    if (lengths_N == 0).any():
        raise ValueError(f"datum {int(np.argmin(lengths_N))} has an empty model_input")
    return keys, lengths_N


def make_batch(
    data: Sequence[Datum],
    *,
    pack: bool,
    seq_buckets: Sequence[int],
    batch_buckets: Sequence[int],
    scored: Sequence[np.ndarray | None] | None = None,
    score_fractions: Sequence[float] = (),
    share_prefix: bool = False,
) -> tuple[Batch, Layout]:
    """Pad or pack `data` into a bucketed `Batch`; the `Layout` maps outputs back to datums.

    `scored` (one bool `[length]` per datum, None = all of it) restricts the log-probs to those
    positions (`Batch.score_idx_BP`) when the fullest row fits in a `score_fractions` share of T.
    `share_prefix`: datums whose unscored starts agree share them (module doc); needs `scored`.
    """
    keys, lengths_N = check_data(data, seq_buckets, batch_buckets)
    flags = None
    if scored is not None:
        flags = [None if m is None else np.asarray(m, bool) for m in scored]
        for i, (f, d) in enumerate(zip(flags, data, strict=True)):
            if f is not None and f.shape != (d.length,):
                raise ValueError(f"datum {i}: scored positions have shape {f.shape}, expected ({d.length},)")
    n = len(data)
    token_lists = [np.asarray(d.model_input.to_ints(), np.int32) for d in data]
    groups = [Group((i,)) for i in range(n)]
    if share_prefix and flags is not None and lengths_N.max() <= seq_buckets[-1]:
        targets = [np.asarray(d.loss_fn_inputs[TARGET_KEY]) for d in data]
        groups = plan_groups(token_lists, targets, flags, max_len=seq_buckets[-1])
    shared = any(g.shared for g in groups)

    # Each group is one unit of the layout: its owner whole, then the other members' own slots.
    unit_N = np.empty(n, np.int64)
    skip_N = np.zeros(n, np.int64)  # leading positions held by the owner, not written again
    offset_N = np.zeros(n, np.int64)  # start of the datum's own slots within its unit
    branch_N = np.zeros(n, np.int64)  # branch id of the datum's own slots (0 alone)
    for u, g in enumerate(groups):
        used = 0
        for k, i in enumerate(g.members):
            unit_N[i], offset_N[i] = u, used
            skip_N[i] = g.shared if k else 0
            branch_N[i] = k + 1 if g.shared else 0
            used += int(lengths_N[i] - skip_N[i])
    own_N = lengths_N - skip_N
    units_U = np.bincount(unit_N, weights=own_N, minlength=len(groups)).astype(np.int64)
    rows_U, starts_U, b, t = _place(units_U, pack, seq_buckets, batch_buckets)
    rows_N, starts_N = rows_U[unit_N], starts_U[unit_N] + offset_N
    total = int(own_N.sum())

    # Flat index of every written token in the [B*T] layout, in datum order.
    offsets_N = np.cumsum(own_N) - own_N  # start of datum i's own tokens in the concatenation
    owner = np.repeat(np.arange(n), own_N)  # datum of each concatenated token
    pos = np.arange(total) - offsets_N[owner] + skip_N[owner]
    dest = (rows_N * t + starts_N - skip_N)[owner] + pos
    # k-th unit of its row (1-based): rank of the start among the row's units.
    m = len(groups)
    order = np.lexsort((starts_U, rows_U))
    rank_U = np.empty(m, np.int64)
    first_of_row = np.r_[True, rows_U[order][1:] != rows_U[order][:-1]]
    group_start = np.maximum.accumulate(np.where(first_of_row, np.arange(m), 0))
    rank_U[order] = np.arange(m) - group_start + 1

    def scatter(values, dtype, fill=0):
        out = np.full((b * t, *values.shape[1:]), fill, dtype)
        out[dest] = values
        return out.reshape(b, t, *values.shape[1:])

    def own(arrays):
        return np.concatenate([a[k:] for a, k in zip(arrays, skip_N.tolist())])

    d_slots = b * t if pack or shared else b
    datum_valid_D = np.zeros(d_slots, np.float32)
    datum_valid_D[:n] = 1.0
    inputs = {
        k: scatter(own([d.loss_fn_inputs[k] for d in data]), np.float32) for k in keys if k != TARGET_KEY
    }
    batch = Batch(
        tokens_BT=scatter(own(token_lists), np.int32),
        positions_BT=scatter(pos, np.int32),
        segment_ids_BT=scatter(rank_U[unit_N][owner], np.int32),
        datum_ids_BT=scatter(owner, np.int32, fill=-1),
        mask_BT=scatter(np.ones(total, np.float32), np.float32),
        targets_BT=scatter(own([d.loss_fn_inputs[TARGET_KEY] for d in data]), np.int32),
        inputs=inputs,
        datum_valid_D=datum_valid_D,
        score_idx_BP=np.zeros((b, 0), np.int32),
    )
    if shared:
        # The owner's shared positions are the prefix (branch 0); every other slot its datum's.
        shared_N = np.array([groups[u].shared for u in unit_N.tolist()], np.int64)
        branch = np.where(pos < shared_N[owner], 0, branch_N[owner])
        batch = dataclasses.replace(batch, branch_ids_BT=scatter(branch, np.int32))
    if flags is not None and score_fractions:
        read = own([np.ones(d.length, bool) if f is None else f for f, d in zip(flags, data)])
        idx = _score_index(dest[read], b, t, score_fractions)
        batch = dataclasses.replace(batch, score_idx_BP=idx)
    layout = Layout(rows_N=rows_N, starts_N=starts_N, lengths_N=lengths_N, batch_size=b, seq_len=t)
    if shared:
        layout = dataclasses.replace(layout, shared_N=skip_N, prefix_starts_N=starts_U[unit_N])
    return batch, layout
