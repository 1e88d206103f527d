"""Bucket ladders (hand-computed rungs), the default buckets of a service, and call splitting."""

import numpy as np
import pytest

from jaxcook.backends.local import LocalService
from jaxcook.engine.batching import call_parts, make_batch
from jaxcook.engine.buckets import BucketConfig, default_seq_buckets, seq_ladder
from tests.engine.tiny import random_datums


def test_seq_ladder_rungs():
    # ratio 2, step 1: powers of two, then 3000 rounded up to 128 (24 x 128 = 3072)
    assert seq_ladder(3000, ratio=2, multiple=1) == default_seq_buckets(3000)
    assert default_seq_buckets(3000) == (64, 128, 256, 512, 1024, 2048, 3072)
    # ratio 1: every multiple of the step
    assert seq_ladder(512, min_len=128, ratio=1, multiple=128) == (128, 256, 384, 512)
    # ratio 1.5 from 64: 96 -> 128, 144 -> 192, 216 -> 256, 324 -> 384, 486 -> 512
    assert seq_ladder(512, ratio=1.5, multiple=64) == (64, 128, 192, 256, 384, 512)
    # ratio 1.25: 64 x 1.25^k stays below the last rung + 64 until k = 12 (64 x 1.25^12 = 931,
    # rounded up to 960 > 768 + 64), so multiples of 64 up to 768, then 960, 1216 (1164 -> 1216),
    # then the top 1280
    assert seq_ladder(1280, ratio=1.25, multiple=64) == (*range(64, 769, 64), 960, 1216, 1280)
    assert seq_ladder(40) == (64,)  # below min_len: one bucket


@pytest.mark.parametrize(
    "kwargs, fragment",
    [(dict(ratio=0.5), "seq bucket ratio must be a number >= 1, got 0.5"), (dict(multiple=0), "multiple")],
)
def test_seq_ladder_bad_values_name_the_setting(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        seq_ladder(256, **kwargs)


def test_service_buckets_and_the_pack_key():
    packed, padded = (
        LocalService(max_length=256, batch_size=8),
        LocalService(max_length=256, batch_size=8, pack=False),
    )
    assert packed.pack and not padded.pack  # packing is the default
    assert packed.buckets.seq_buckets == tuple(range(64, 513, 64))  # packed rows up to 2 x 256
    assert padded.buckets.seq_buckets == (64, 128, 192, 256)
    assert packed.buckets.batch_buckets == (1, 2, 4, 8)
    # every (B, T) scored in full or at one of the 4 score fractions
    assert packed.buckets.num_programs == 4 * 8 * 5
    with pytest.raises(ValueError, match=r"^pack must be true or false, got 'yes'$"):
        LocalService(pack="yes")


def test_call_parts_pad_at_the_largest_batch_and_pack_whole_when_it_fits():
    config = BucketConfig(seq_buckets=(16, 32), batch_buckets=(2, 4))
    data = random_datums(10, lengths=(3, 8), seed=0)  # 10 x 3..7 tokens: 4 rows of 32 hold them
    lengths = [d.length for d in data]
    assert call_parts(lengths, False, config) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert call_parts(lengths, True, config) == [slice(0, 10)]
    make_batch(data, pack=True, seq_buckets=config.seq_buckets, batch_buckets=config.batch_buckets)


def test_call_parts_split_a_packed_call_too_long_for_the_largest_batch():
    config = BucketConfig(seq_buckets=(16, 32), batch_buckets=(2, 4))
    rng = np.random.default_rng(1)
    data = random_datums(40, lengths=(3, 31), seed=1)
    data = [data[i] for i in rng.permutation(40)]
    buckets = dict(seq_buckets=config.seq_buckets, batch_buckets=config.batch_buckets)
    with pytest.raises(ValueError, match="do not pack into the largest bucket"):
        make_batch(data, pack=True, **buckets)
    parts = call_parts([d.length for d in data], True, config)
    assert [i for s in parts for i in range(40)[s]] == list(range(40))  # consecutive, in order
    for s in parts:
        make_batch(data[s], pack=True, **buckets)  # each part fits
    assert len(parts) < len(call_parts([d.length for d in data], False, config))


def test_the_model_pack_key_turns_packing_off_and_bad_values_name_it():
    from jaxcook.config import OverrideError, apply_overrides
    from jaxcook.recipes import sft
    from jaxcook.workflows.common import make_setup

    assert sft.Config().model.pack is True
    cfg = apply_overrides(sft.tiny(), ["model.pack=false"])
    assert cfg.model.pack is False
    client = make_setup(cfg.model, max_length=64, batch_size=4).client
    assert client.pack is False and client.buckets.seq_buckets == (64,)
    client.close()
    with pytest.raises(OverrideError) as err:
        apply_overrides(sft.Config(), ["model.pack=maybe"])
    assert "model.pack" in str(err.value) and "\n" not in str(err.value)
