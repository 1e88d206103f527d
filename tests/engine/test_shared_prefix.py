"""Shared-prefix layout: datums that start alike hold that start once, and nothing else changes.

Invariance tests: on RL-shaped groups (importance_sampling, ppo) and DPO pairs, the shared layout
gives the unshared layout's loss, metrics, gradient and per-datum log-probs (in input order);
plus the mask rule by hand and the grouping rule.
"""

import dataclasses

import jax
import numpy as np
import pytest

from jaxcook.core import losses as losses_lib
from jaxcook.engine.batching import BucketConfig, make_batch, unbatch
from jaxcook.engine.shared_prefix import plan_groups
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.attention import attention_mask
from jaxcook.models.decoder import Decoder
from jaxcook.types import Datum, ModelInput
from tests.engine.tiny import TINY, tiny_model

BUCKETS = BucketConfig(seq_buckets=(32, 64), batch_buckets=(2, 4, 8))
LORA = LoraConfig(rank=4)


def rl_datums(groups: int, group_size: int, prompt_len: int, rng) -> list[Datum]:
    """Datums as `rl.assemble_training_data` makes them: input = ob + ac[:-1], targets =
    ob[1:] + ac; sampler log-probs, advantages and mask on the action targets only."""
    out = []
    for _ in range(groups):
        ob = rng.integers(0, TINY.vocab_size, prompt_len)
        for _ in range(group_size):
            ac = rng.integers(0, TINY.vocab_size, int(rng.integers(2, 7)))
            seq = np.concatenate([ob, ac])
            on_ac = np.r_[np.zeros(prompt_len - 1), np.ones(len(ac))].astype(np.float32)
            inputs = {
                "target_tokens": seq[1:],
                "logprobs": (on_ac * -rng.uniform(0.5, 5.0, len(on_ac))).astype(np.float32),
                "advantages": (on_ac * rng.normal()).astype(np.float32),
                "mask": on_ac,
            }
            out.append(Datum(ModelInput.from_ints(seq[:-1].tolist()), inputs))
    order = rng.permutation(len(out))  # interleave the groups: sharing must find them
    return [out[i] for i in order]


def dpo_datums(pairs: int, prompt_len: int, rng) -> list[Datum]:
    out = []
    for _ in range(pairs):
        prompt = rng.integers(0, TINY.vocab_size, prompt_len)
        for _ in range(2):  # chosen, rejected: datums 2i and 2i+1
            comp = rng.integers(0, TINY.vocab_size, int(rng.integers(3, 9)))
            seq = np.concatenate([prompt, comp])
            w = np.r_[np.zeros(prompt_len - 1), np.ones(len(comp))].astype(np.float32)
            ref = (w * -rng.uniform(0.5, 5.0, len(w))).astype(np.float32)
            inputs = {"target_tokens": seq[1:], "weights": w, "ref_logprobs": ref}
            out.append(Datum(ModelInput.from_ints(seq[:-1].tolist()), inputs))
    return out


def grads(c):
    return jax.device_get(c.current_state().result().grad_accum)


def assert_same_step(data, loss_fn, config=None, model=tiny_model):
    """One forward_backward with and without sharing: same loss, metrics, log-probs, gradient."""
    on, off = (
        LocalTrainingClient(model(LORA), lora=LORA, buckets=BUCKETS, share_prefix=s) for s in (True, False)
    )
    try:
        batch_on, _ = on._batch(data, loss_fn)
        batch_off, _ = off._batch(data, loss_fn)
        assert batch_on.branch_ids_BT is not None and batch_off.branch_ids_BT is None
        assert batch_on.tokens_BT.size < batch_off.tokens_BT.size  # less work, or nothing to test
        out_on = on.forward_backward(data, loss_fn, config).result()
        out_off = off.forward_backward(data, loss_fn, config).result()
        assert out_on.metrics.keys() == out_off.metrics.keys()
        for key, value in out_off.metrics.items():
            assert out_on.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
        for d, a, b in zip(data, out_on.loss_fn_outputs, out_off.loss_fn_outputs, strict=True):
            assert a["logprobs"].shape == (d.length,)
            np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)
        g_on, g_off = grads(on), grads(off)
        assert max(float(np.abs(x).max()) for x in jax.tree.leaves(g_off)) > 1e-3  # a real gradient
        for x, y in zip(jax.tree.leaves(g_on), jax.tree.leaves(g_off), strict=True):
            np.testing.assert_allclose(x, y, atol=1e-5)
    finally:
        on.close(), off.close()


@pytest.mark.parametrize("loss_fn", ["importance_sampling", pytest.param("ppo", marks=pytest.mark.slow)])
def test_rl_groups_shared_equal_unshared(loss_fn):
    data = rl_datums(groups=2, group_size=4, prompt_len=20, rng=np.random.default_rng(0))
    config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1} if loss_fn == "ppo" else None
    assert_same_step(data, loss_fn, config)


def test_dpo_pairs_shared_equal_unshared():
    assert_same_step(dpo_datums(pairs=3, prompt_len=18, rng=np.random.default_rng(1)), "dpo", {"beta": 0.5})


@pytest.mark.slow
def test_sliding_window_counts_positions_not_slots():
    # Window 6 < the 17-token prefix: a branch query must see the prefix keys fewer than 6
    # positions back, which lie more than 6 slots back behind its siblings.
    cfg = dataclasses.replace(TINY, sliding_window=6, layer_types=("sliding_attention", "full_attention"))
    data = rl_datums(groups=1, group_size=3, prompt_len=18, rng=np.random.default_rng(2))
    assert_same_step(data, "importance_sampling", model=lambda lora: Decoder(cfg, lora=lora))


def test_layout_holds_the_prefix_once():
    data = rl_datums(groups=2, group_size=3, prompt_len=20, rng=np.random.default_rng(3))
    read = [losses_lib.positions_read("importance_sampling", d.loss_fn_inputs) for d in data]
    batch, layout = make_batch(
        data, pack=False, seq_buckets=(32, 64), batch_buckets=(2, 4, 8), scored=read, share_prefix=True
    )
    assert batch.tokens_BT.shape[0] == 2  # one group per row
    # 2 x 19 shared positions (targets before the first action) held once: 19 + 3 own per datum
    assert int(batch.mask_BT.sum()) == sum(d.length for d in data) - 2 * 2 * 19
    for d, tokens, pos in zip(
        data, unbatch(layout, batch.tokens_BT), unbatch(layout, batch.positions_BT), strict=True
    ):
        np.testing.assert_array_equal(tokens, d.model_input.to_ints())
        np.testing.assert_array_equal(pos, np.arange(d.length))  # positions continue after the prefix
    for r in range(2):
        branch = batch.branch_ids_BT[r][batch.mask_BT[r] > 0]
        assert (branch[:19] == 0).all() and sorted(set(branch[19:].tolist())) == [1, 2, 3]


def test_attention_mask_branch_rule():
    # One row: prefix slots 0-1 (branch 0), branch 1 at slots 2-3, branch 2 at slots 4-5, padding.
    seg = np.array([[1, 1, 1, 1, 1, 1, 0]])
    branch = np.array([[0, 0, 1, 1, 2, 2, 0]])
    pos = np.array([[0, 1, 2, 3, 2, 3, 0]])
    slots = np.arange(7)
    mask = np.asarray(attention_mask(slots, slots, seg, seg, branches=(branch, branch, pos, pos)))[0]
    expected = np.array(
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 0],  # branch 2 sees the prefix and itself, not branch 1
            [1, 1, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0],  # padding sees nothing
        ],
        bool,
    )
    np.testing.assert_array_equal(mask, expected)
    windowed = np.asarray(attention_mask(slots, slots, seg, seg, 2, branches=(branch, branch, pos, pos)))[0]
    assert windowed[4].tolist() == [0, 1, 0, 0, 1, 0, 0]  # position 2 sees positions 1 and 2
    plain = np.asarray(attention_mask(slots, slots, seg, seg))[0]
    assert plain[4].tolist() == [1, 1, 1, 1, 1, 0, 0]  # without branches: every earlier slot


def test_plan_groups_rule():
    rng = np.random.default_rng(4)
    prompt, other = rng.integers(0, 50, 30), rng.integers(0, 50, 30)

    def seq(start, n):
        return np.concatenate([start, rng.integers(50, 90, n)])

    tokens = [seq(prompt, 4), seq(other, 4), seq(prompt, 6), seq(prompt[:10], 8), seq(other, 3)]
    read = [np.r_[np.zeros(len(t) - 5, bool), np.ones(5, bool)] for t in tokens]
    targets = [np.r_[t[1:], 0] for t in tokens]
    groups = plan_groups(tokens, targets, read, max_len=200, min_shared=8)
    by_member = {m: g for g in groups for m in g.members}
    assert set(by_member[0].members) == {0, 2} and by_member[0].shared == 29  # 34 positions, the last 5 read
    assert set(by_member[1].members) == {1, 4} and by_member[1].shared == 28
    assert by_member[3].members == (3,) and by_member[3].shared == 0  # 10 in common: not worth it
    too_long = plan_groups(tokens, targets, read, max_len=38, min_shared=8)
    assert all(len(g.members) == 1 for g in too_long)
    nothing_unread = plan_groups(tokens, targets, [None] * 5, max_len=200, min_shared=8)
    assert all(g.shared == 0 for g in nothing_unread)
