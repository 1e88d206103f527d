"""A process's share of a global batch: only the rows its own devices hold, built on its host.

    batch, layout = make_process_batch(data, mesh, pack=..., seq_buckets=..., batch_buckets=...)

On a multi-process mesh every process receives the whole list of datums (the port's call is
the same on every process), plans the global `[B, T]` layout from the datums' lengths alone
(`batching._place`: cheap, identical everywhere) and then builds host arrays for its own rows
only: `local_rows` of B, i.e. B / num_processes rows on a `data` x `fsdp` mesh whose batch axes
span the processes. The global `jax.Array`s are assembled from those parts with
`jax.make_array_from_process_local_data`; no host ever holds the global `[B, T]` arrays.

The local rows are `batching.make_batch` of just the datums placed in them, with the global
`(B_local, T)` forced as the only bucket. That reproduces the global rows exactly: padding puts
datum i in row i; first-fit-decreasing restricted to a set of rows places each of their datums
in the same row (earlier rows of the set have the same contents when it is placed, as only the
set's datums go there). Three fields are then made global: `datum_ids_BT` indexes the whole
input list, `score_idx_BP` has the global P (from the fullest row of the whole batch), and a
packed batch's `datum_valid_D` (`[B * T]`, replicated) counts every datum.

Every process validates the whole list (keys, lengths, buckets), so a bad datum raises the same
error everywhere instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from jaxcook.engine import batching, distributed, sharding
from jaxcook.engine.batching import Batch, Layout, make_batch
from jaxcook.types import Datum, ModelInput


def local_rows(mesh: Mesh, batch_size: int) -> np.ndarray:
    """Sorted global row indices of a `[batch_size, ...]` batch held by this process's devices."""
    index_map = sharding.batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    rows = {r for (s,) in index_map.values() for r in range(batch_size)[s]}
    return np.asarray(sorted(rows), np.int64)


def plan(
    data: Sequence[Datum],
    *,
    pack: bool,
    seq_buckets: Sequence[int],
    batch_buckets: Sequence[int],
    scored: Sequence[np.ndarray | None] | None = None,
    score_fractions: Sequence[float] = (),
) -> tuple[Layout, int]:
    """The global `Layout` and scored-position count P of `make_batch(data, ...)`, from lengths
    alone (the same checks and errors as `make_batch`)."""
    _, lengths_N = batching.check_data(data, seq_buckets, batch_buckets)
    rows_N, starts_N, b, t = batching._place(lengths_N, pack, seq_buckets, batch_buckets)
    layout = Layout(rows_N=rows_N, starts_N=starts_N, lengths_N=lengths_N, batch_size=b, seq_len=t)
    p = 0
    if scored is not None and score_fractions:
        counts_N = np.asarray(
            [d.length if m is None else int(np.count_nonzero(m)) for m, d in zip(scored, data, strict=True)]
        )
        fullest = int(np.bincount(rows_N, weights=counts_N, minlength=b).max())
        # P of a one-row batch whose row holds `fullest` scored slots: the same rule as make_batch
        p = batching._score_index(np.arange(fullest), 1, t, score_fractions).shape[1]
    return layout, p


def build_rows(
    data: Sequence[Datum],
    layout: Layout,
    p: int,
    rows: np.ndarray,
    *,
    pack: bool,
    scored: Sequence[np.ndarray | None] | None = None,
    score_fractions: Sequence[float] = (),
) -> Batch:
    """Host arrays of the global batch `plan` laid out, for global `rows` (sorted) only: equal to
    `make_batch(data, ...)` with every `[B, ...]` field indexed by `rows`."""
    b, t = len(rows), layout.seq_len
    sel_K = np.flatnonzero(np.isin(layout.rows_N, rows))  # the datums in these rows, in order
    if len(sel_K):
        part = [data[i] for i in sel_K]
        batch, _ = make_batch(
            part,
            pack=pack,
            seq_buckets=(t,),
            batch_buckets=(b,),
            scored=None if scored is None else [scored[i] for i in sel_K],
            score_fractions=score_fractions,
        )
        ids = batch.datum_ids_BT
        batch = dataclasses.replace(batch, datum_ids_BT=np.where(ids >= 0, sel_K[np.maximum(ids, 0)], -1))
    else:  # only padding rows here: any one-token datum, then blanked
        d = data[0]
        probe = Datum(ModelInput.from_ints([0]), {k: v[:1] for k, v in d.loss_fn_inputs.items()})
        batch, _ = make_batch([probe], pack=pack, seq_buckets=(t,), batch_buckets=(b,))
        batch = jax.tree.map(np.zeros_like, batch)
        batch = dataclasses.replace(batch, datum_ids_BT=np.full_like(batch.datum_ids_BT, -1))
    # global P: pad this part's slots with T (make_batch's filler), or every slot (P = 0)
    idx = batch.score_idx_BP
    if p == 0:
        idx = np.zeros((b, 0), np.int32)
    elif idx.shape[1] != p:
        if idx.shape[1] > p or (idx.shape[1] == 0 and len(sel_K)):
            raise AssertionError(f"local scored positions {idx.shape[1]} exceed the global {p}")
        idx = np.concatenate([idx, np.full((b, p - idx.shape[1]), t, np.int32)], axis=1)
    batch = dataclasses.replace(batch, score_idx_BP=idx)
    if pack:  # [B * T] datum slots, replicated: the global count
        valid_D = np.zeros(layout.batch_size * t, np.float32)
        valid_D[: layout.num_datums] = 1.0
        batch = dataclasses.replace(batch, datum_valid_D=valid_D)
    return batch


def _check_split(B: int, mesh: Mesh) -> int:
    shards = sharding.num_batch_shards(mesh)
    if B % shards:
        raise ValueError(
            f"batch bucket {B} does not split over {shards} devices; "
            "use batch buckets that are multiples of the device count"
        )
    return B


def make_process_batch(
    data: Sequence[Datum],
    mesh: Mesh,
    *,
    pack: bool,
    seq_buckets: Sequence[int],
    batch_buckets: Sequence[int],
    scored: Sequence[np.ndarray | None] | None = None,
    score_fractions: Sequence[float] = (),
    share_prefix: bool = False,
) -> tuple[Batch, Layout, Batch]:
    """The global device `Batch` (rows over the mesh's batch axes), its `Layout`, and the host
    `Batch` this process built (its own rows only; every row when one process holds them all)."""
    kw = dict(pack=pack, scored=scored, score_fractions=score_fractions)
    row, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    if jax.process_count() == 1:  # every row is this process's: the plain batch, placed as it is
        host, layout = make_batch(
            data, seq_buckets=seq_buckets, batch_buckets=batch_buckets, share_prefix=share_prefix, **kw
        )
        B = _check_split(layout.batch_size, mesh)
        place = lambda x: distributed.place(x, row if x.ndim and x.shape[0] == B else rep)
        return jax.tree.map(place, host), layout, host
    # Several processes plan the rows from lengths alone, so shared prefixes (`share_prefix`) are
    # not laid out here: the unshared layout is exact, it only spends more tokens.
    layout, p = plan(data, seq_buckets=seq_buckets, batch_buckets=batch_buckets, **kw)
    B = _check_split(layout.batch_size, mesh)
    rows = local_rows(mesh, B)
    host = build_rows(data, layout, p, rows, **kw)

    def put(path, x):
        if pack and path[0].name == "datum_valid_D":
            return distributed.place(x, rep)  # identical on every process
        if x.shape[0] != len(rows):
            name = jax.tree_util.keystr(path)
            raise ValueError(f"Batch{name}: leading dim {x.shape[0]} is not the {len(rows)} local rows")
        return jax.make_array_from_process_local_data(row, x, (B, *x.shape[1:]))

    return jax.tree_util.tree_map_with_path(put, host), layout, host
