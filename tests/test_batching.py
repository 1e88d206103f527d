"""Batching: datums round-trip through padded and packed batches; shapes stay in the buckets."""

import jax
import numpy as np
import pytest

from jaxcook.engine.batching import (
    Batch,
    BucketConfig,
    bucket_shapes,
    default_batch_buckets,
    default_seq_buckets,
    make_batch,
    unbatch,
)
from jaxcook.types import Datum, ModelInput

SEQ = (8, 16, 32)
BATCH = (1, 2, 4, 8)


def _datum(rng, n, *, k=None, extra=("weights", "advantages")):
    shape = (n,) if k is None else (n, k)
    inputs = {"target_tokens": rng.integers(1, 1000, shape)}
    inputs.update({key: rng.normal(size=shape if key == "weights" else (n,)) for key in extra})
    return Datum(ModelInput.from_ints(rng.integers(1, 1000, n).tolist()), inputs)


def _roundtrip(data, batch, layout):
    """Every per-token array cut back by the layout equals the datum's own array."""
    tokens = unbatch(layout, batch.tokens_BT)
    targets = unbatch(layout, batch.targets_BT)
    positions = unbatch(layout, batch.positions_BT)
    ids = unbatch(layout, batch.datum_ids_BT)
    for i, d in enumerate(data):
        np.testing.assert_array_equal(tokens[i], d.model_input.to_ints())
        np.testing.assert_array_equal(targets[i], d.loss_fn_inputs["target_tokens"])
        np.testing.assert_array_equal(positions[i], np.arange(d.length))
        np.testing.assert_array_equal(ids[i], i)
        for key, arr_BT in batch.inputs.items():
            np.testing.assert_array_equal(unbatch(layout, arr_BT)[i], d.loss_fn_inputs[key])
    # Padding is exactly the complement of the datums' tokens, and is zero everywhere.
    n_real = sum(d.length for d in data)
    assert batch.mask_BT.sum() == n_real
    pad = batch.mask_BT == 0
    assert (batch.datum_ids_BT[pad] == -1).all() and (batch.segment_ids_BT[pad] == 0).all()
    for arr in (batch.tokens_BT, batch.targets_BT, batch.positions_BT, *batch.inputs.values()):
        assert not arr[pad].any()
    assert batch.datum_valid_D.sum() == len(data) and (batch.datum_valid_D[: len(data)] == 1).all()


@pytest.mark.parametrize("pack", [False, True])
def test_roundtrip(pack):
    rng = np.random.default_rng(0)
    data = [_datum(rng, int(n)) for n in rng.integers(1, 33, size=7)]
    batch, layout = make_batch(data, pack=pack, seq_buckets=SEQ, batch_buckets=BATCH)
    _roundtrip(data, batch, layout)
    dtypes = {
        f: getattr(batch, f).dtype for f in ("tokens_BT", "positions_BT", "segment_ids_BT", "datum_ids_BT")
    }
    assert set(dtypes.values()) == {np.dtype(np.int32)}
    assert batch.mask_BT.dtype == np.float32 and all(a.dtype == np.float32 for a in batch.inputs.values())
    b, t = batch.tokens_BT.shape
    assert batch.datum_valid_D.shape == ((b * t,) if pack else (b,))


def test_padding_layout():
    rng = np.random.default_rng(1)
    data = [_datum(rng, n) for n in (5, 17, 3)]
    batch, layout = make_batch(data, pack=False, seq_buckets=SEQ, batch_buckets=BATCH)
    # 3 datums -> B=4; longest 17 -> T=32; datum i alone in row i from column 0.
    assert batch.tokens_BT.shape == (4, 32)
    np.testing.assert_array_equal(layout.rows_N, [0, 1, 2])
    np.testing.assert_array_equal(layout.starts_N, [0, 0, 0])
    np.testing.assert_array_equal(batch.segment_ids_BT.max(axis=1), [1, 1, 1, 0])


def test_packing_first_fit_decreasing():
    rng = np.random.default_rng(2)
    # Lengths 9, 9, 2, 9, 3 (32 tokens). T=16: three 9s need 3 rows -> B=4, 64 slots; T=32: all
    # in 1 row -> B=1, 32 slots, the cheapest. Decreasing order (ties by index) 9(0) 9(1) 9(3)
    # 3(4) 2(2) -> starts 0, 9, 18, 27, 30.
    data = [_datum(rng, n) for n in (9, 9, 2, 9, 3)]
    batch, layout = make_batch(data, pack=True, seq_buckets=SEQ, batch_buckets=BATCH)
    assert batch.tokens_BT.shape == (1, 32)
    np.testing.assert_array_equal(layout.starts_N, [0, 9, 30, 18, 27])
    np.testing.assert_array_equal(batch.segment_ids_BT[0, [0, 9, 18, 27, 30, 31]], [1, 2, 3, 4, 5, 5])
    _roundtrip(data, batch, layout)

    # Lengths 7, 10, 3, 6, 5 with T=16: FFD 10 -> r0; 7 -> r1 (10+7>16); 6 -> r0 (16);
    # 5 -> r1 (12); 3 -> r1 (15). Two rows -> B=2, 32 slots; T=32 would be 1 row, also 32
    # slots: the tie goes to the shorter rows.
    data = [_datum(rng, n) for n in (7, 10, 3, 6, 5)]
    batch, layout = make_batch(data, pack=True, seq_buckets=SEQ, batch_buckets=BATCH)
    assert batch.tokens_BT.shape == (2, 16)
    np.testing.assert_array_equal(layout.rows_N, [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(layout.starts_N, [0, 0, 12, 10, 7])
    np.testing.assert_array_equal(batch.positions_BT[0], [*range(10), *range(6)])
    np.testing.assert_array_equal(batch.segment_ids_BT[1], [1] * 7 + [2] * 5 + [3] * 3 + [0])
    _roundtrip(data, batch, layout)


def test_soft_targets():
    rng = np.random.default_rng(3)
    data = [_datum(rng, n, k=4, extra=("weights",)) for n in (3, 9)]
    for pack in (False, True):
        batch, layout = make_batch(data, pack=pack, seq_buckets=SEQ, batch_buckets=BATCH)
        assert batch.targets_BT.shape[2:] == (4,) and batch.inputs["weights"].shape[2:] == (4,)
        _roundtrip(data, batch, layout)


def test_shapes_stay_in_buckets():
    config = BucketConfig(seq_buckets=default_seq_buckets(300), batch_buckets=default_batch_buckets(12))
    # 64..256 then 300 rounded up to 384; batch 1..8 then 12: 5 x 5 programs at most.
    assert config.seq_buckets == (64, 128, 256, 384) and config.batch_buckets == (1, 2, 4, 8, 12)
    allowed = set(bucket_shapes(config))
    assert len(allowed) == 4 * 5
    rng = np.random.default_rng(4)
    seen = set()
    for trial in range(40):
        n = int(rng.integers(1, 13))
        data = [_datum(rng, int(x)) for x in rng.integers(1, 385, size=n)]
        batch, _ = make_batch(data, pack=bool(trial % 2), **vars(config))
        seen.add(batch.tokens_BT.shape)
    assert seen <= allowed and len(seen) > 3


def test_batch_is_a_pytree():
    rng = np.random.default_rng(5)
    batch, _ = make_batch([_datum(rng, 4)], pack=False, seq_buckets=SEQ, batch_buckets=BATCH)
    leaves = jax.tree.leaves(batch)
    assert len(leaves) == 6 + 2 + 1 + 1  # six [B,T] arrays + two inputs + datum_valid_D + score_idx_BP
    doubled = jax.jit(lambda b: jax.tree.map(lambda x: x * 2, b))(batch)
    assert isinstance(doubled, Batch)
    np.testing.assert_array_equal(doubled.tokens_BT, batch.tokens_BT * 2)


def test_errors_name_the_culprit():
    rng = np.random.default_rng(6)
    ok = [_datum(rng, 4), _datum(rng, 5)]
    with pytest.raises(
        ValueError, match=r"datum 1 has length 40, longer than the largest sequence bucket 32"
    ):
        make_batch([ok[0], _datum(rng, 40)], pack=True, seq_buckets=SEQ, batch_buckets=BATCH)
    with pytest.raises(
        ValueError, match=r"datum 2 has loss_fn_inputs keys \['advantages', 'target_tokens'\]"
    ):
        make_batch(
            [*ok, _datum(rng, 3, extra=("advantages",))], pack=False, seq_buckets=SEQ, batch_buckets=BATCH
        )
    with pytest.raises(ValueError, match=r"datum 1: loss_fn_inputs\['target_tokens'\].*not both"):
        make_batch([ok[0], _datum(rng, 3, k=2)], pack=False, seq_buckets=SEQ, batch_buckets=BATCH)
    with pytest.raises(ValueError, match=r"9 datums exceed the largest batch bucket 8"):
        make_batch([ok[0]] * 9, pack=False, seq_buckets=SEQ, batch_buckets=BATCH)
    with pytest.raises(ValueError, match=r"do not pack into the largest bucket B=2 x T=8"):
        make_batch([_datum(rng, 8)] * 3, pack=True, seq_buckets=(8,), batch_buckets=(1, 2))
    no_targets = Datum(ModelInput.from_ints([1, 2]), {"weights": np.ones(2)})
    with pytest.raises(ValueError, match=r"datum 0 has no 'target_tokens'"):
        make_batch([no_targets], pack=False, seq_buckets=SEQ, batch_buckets=BATCH)
    with pytest.raises(ValueError, match=r"BucketConfig.seq_buckets must be strictly increasing"):
        BucketConfig(seq_buckets=(64, 32))
