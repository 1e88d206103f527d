"""A process's rows of a global batch (`process_batch.build_rows`) equal those rows of the whole
batch (`make_batch`), padded or packed, scored or not, for any set of rows, including rows that
hold only padding. Host numpy only; the multi-process run is in test_multihost."""

import jax
import numpy as np
import pytest

from jaxcook.engine.batching import make_batch
from jaxcook.engine.process_batch import build_rows, plan
from tests.engine.tiny import random_datums

BUCKETS = dict(seq_buckets=(16, 32, 64), batch_buckets=(4, 8))


def scored_masks(data, seed):
    """Datum 0 is scored densely and the others sparsely, so rows without it need fewer slots P
    than the whole batch (each part is padded to the global P); datum 1 is scored in full."""
    rng = np.random.default_rng(seed)
    density = [0.6, 1.0] + [0.1] * len(data)
    return [None if density[i] == 1 else rng.random(d.length) < density[i] for i, d in enumerate(data)]


# n=1 and packed n=3 leave rows with padding only; packed n=13 fills several rows
@pytest.mark.parametrize("pack,n", [(False, 1), (False, 3), (False, 8), (True, 3), (True, 13)])
@pytest.mark.parametrize("with_scored", [False, True])
def test_rows_equal_the_global_batch_rows(pack, n, with_scored):
    data = random_datums(n, lengths=(3, 30), seed=n)
    scored = scored_masks(data, n) if with_scored else None
    kw = dict(pack=pack, scored=scored, score_fractions=(0.125, 0.25, 0.5, 0.75))
    whole, want_layout = make_batch(data, **BUCKETS, **kw)
    layout, p = plan(data, **BUCKETS, **kw)
    for field in ("rows_N", "starts_N", "lengths_N"):
        np.testing.assert_array_equal(getattr(layout, field), getattr(want_layout, field))
    assert (layout.batch_size, layout.seq_len) == (want_layout.batch_size, want_layout.seq_len)
    assert p == whole.score_idx_BP.shape[1]
    B = layout.batch_size
    for rows in (np.arange(B // 2), np.arange(B // 2, B), np.arange(1, B, 2), np.arange(B - 2, B)):
        part = build_rows(data, layout, p, rows, **kw)
        for path, got in jax.tree_util.tree_leaves_with_path(part):
            want = jax.tree_util.tree_leaves_with_path(whole)
            want = dict((jax.tree_util.keystr(k), v) for k, v in want)[jax.tree_util.keystr(path)]
            if pack and jax.tree_util.keystr(path) == ".datum_valid_D":
                np.testing.assert_array_equal(got, want)  # [B * T] slots, replicated
            else:
                np.testing.assert_array_equal(got, want[rows], err_msg=f"{jax.tree_util.keystr(path)} {rows}")
