"""Train-step invariances: microbatching, packing, overfitting, bounded compiles, save/restore."""

import collections
import dataclasses
import logging
import re

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcook.engine.batching import BucketConfig
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.models.config import MoeConfig
from jaxcook.models.decoder import Decoder
from jaxcook.types import AdamParams
from tests.engine.tiny import TINY, random_datums, tiny_model

BUCKETS = BucketConfig(seq_buckets=(16, 32), batch_buckets=(2, 4, 8))
ADAM = AdamParams(learning_rate=1e-2)


def client(lora=LoraConfig(rank=4), pack=False, **kw):
    return LocalTrainingClient(tiny_model(lora), lora=lora, buckets=BUCKETS, pack=pack, **kw)


def params_of(c):
    return jax.device_get(c.current_state().result().params)


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


@pytest.mark.parametrize("lora", [LoraConfig(rank=4), None], ids=["lora", "full"])
def test_microbatches_equal_full_batch(lora):
    data = random_datums(8, seed=1)
    full, micro = client(lora), client(lora)
    full.forward_backward(data)
    out_full = full.optim_step(ADAM).result()
    for i in range(0, 8, 2):
        micro.forward_backward(data[i : i + 2])
    out_micro = micro.optim_step(ADAM).result()
    assert_trees_close(params_of(full), params_of(micro), atol=1e-6)
    assert out_full["optim/grad_norm"] == pytest.approx(out_micro["optim/grad_norm"], rel=1e-5)


def test_packed_equals_padded():
    data = random_datums(6, lengths=(3, 12), seed=2)
    padded, packed = client(pack=False), client(pack=True)
    out_pad = padded.forward_backward(data).result()
    out_pack = packed.forward_backward(data).result()
    assert out_pad.metrics["loss:sum"] == pytest.approx(out_pack.metrics["loss:sum"], rel=1e-5)
    for a, b in zip(out_pad.loss_fn_outputs, out_pack.loss_fn_outputs, strict=True):
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)
    padded.optim_step(ADAM), packed.optim_step(ADAM)
    assert_trees_close(params_of(padded), params_of(packed), atol=1e-6)


# Packing is exact for these too: the router's load-balancing loss sums over the valid tokens
# of the call (not per row), and a window within a segment counts positions, as slots there are
# consecutive. The window (4) is shorter than the datums (3..11 tokens), so it matters.
FAMILIES = {
    "moe": dataclasses.replace(
        TINY,
        model_type="qwen3_moe",
        moe=MoeConfig(num_experts=4, top_k=2, intermediate_size=16, norm_topk_prob=True, aux_loss_coef=0.1),
    ),
    "sliding": dataclasses.replace(TINY, model_type="mistral", sliding_window=4),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_equals_padded_for_moe_and_sliding_window(family):
    lora = LoraConfig(rank=4)
    data = random_datums(6, lengths=(3, 12), seed=7)
    pair = [
        LocalTrainingClient(
            Decoder(FAMILIES[family], lora=lora, rngs=nnx.Rngs(params=0, lora=1)),
            lora=lora,
            buckets=BUCKETS,
            pack=pack,
        )
        for pack in (False, True)
    ]
    assert pair[1]._batch(data)[0].segment_ids_BT.max() > 1  # several datums share a row
    outs = [c.forward_backward(data).result() for c in pair]
    assert outs[0].metrics["loss:sum"] == pytest.approx(outs[1].metrics["loss:sum"], rel=1e-5)
    for a, b in zip(outs[0].loss_fn_outputs, outs[1].loss_fn_outputs, strict=True):
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)
    grads = [jax.device_get(c.current_state().result().grad_accum) for c in pair]
    assert_trees_close(*grads, atol=1e-5)
    for c in pair:
        c.close()


def test_a_packing_client_splits_only_a_call_too_long_for_one_batch():
    data = random_datums(40, lengths=(3, 12), seed=8)  # ~290 tokens: more than 8 rows x 32
    padded, packed = client(pack=False), client(pack=True)
    assert len(packed._parts(data)) < len(padded._parts(data))
    outs = [c.forward_backward(data).result() for c in (padded, packed)]
    for a, b in zip(outs[0].loss_fn_outputs, outs[1].loss_fn_outputs, strict=True):
        np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=1e-5)
    grads = [jax.device_get(c.current_state().result().grad_accum) for c in (padded, packed)]
    assert_trees_close(*grads, atol=1e-5)


def test_a_custom_loss_sees_one_datum_per_row_on_a_packing_client():
    seen = []

    def rows(logp, batch):  # a loss that reduces per row would be wrong on packed rows
        seen.append(batch.tokens_BT.shape[0])
        loss = -(logp * batch.mask_BT).sum()
        return loss, {"max_segment": batch.segment_ids_BT.max().astype(np.float32)}

    out = client(pack=True).forward_backward_custom(random_datums(4, lengths=(3, 6), seed=9), rows).result()
    assert out.metrics["max_segment"] == 1.0 and seen == [4]


def test_tiny_model_overfits_one_batch():
    c = client(lora=None)
    data = random_datums(4, lengths=(10, 20), seed=3)
    first = c.forward_backward(data).result().metrics["loss:sum"]
    c.optim_step(ADAM)
    for _ in range(60):
        c.forward_backward(data)
        c.optim_step(AdamParams(learning_rate=1e-2))
    last = c.forward_backward(data).result().metrics["loss:sum"]
    assert last < 0.05 * first


class CompileLog(logging.Handler):
    """Counts XLA compilations per jitted function name (from jax's compile log)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def emit(self, record):
        match = re.match(r"Finished XLA compilation of jit\((\w+)\)", record.getMessage())
        if match:
            self.counts[match.group(1)] += 1


def test_compiles_stay_within_bucket_count():
    c = client(lora=LoraConfig(rank=3))  # a structure no other test compiled (jit caches are global)
    rng = np.random.default_rng(0)
    shapes = set()
    handler = CompileLog()
    logger = logging.getLogger("jax._src.dispatch")
    logger.addHandler(handler)
    jax.config.update("jax_log_compiles", True)
    try:
        for i in range(12):
            data = random_datums(int(rng.integers(1, 9)), lengths=(2, 31), seed=10 + i)
            batch = c._batch(data, "cross_entropy")[0]
            shapes.add((batch.tokens_BT.shape, batch.score_idx_BP.shape))
            c.forward_backward(data)
            c.optim_step(AdamParams(learning_rate=float(rng.random()) * 1e-3)).result()
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
    assert len(shapes) > 1
    assert handler.counts["_forward_backward"] == len(shapes) <= BUCKETS.num_programs
    assert handler.counts["optim_step"] == 1  # a new learning rate is data, not a new program


def test_logprobs_are_returned_per_datum_in_order():
    c = client()
    data = random_datums(3, seed=4)
    out = c.forward(data).result()
    assert [len(o["logprobs"]) for o in out.loss_fn_outputs] == [d.length for d in data]
    assert all(np.all(o["logprobs"] <= 0) for o in out.loss_fn_outputs)


def test_save_restore_then_step_equals_step(tmp_path):
    data = random_datums(4, seed=5)
    a = client()
    a.forward_backward(data)
    a.optim_step(ADAM)
    a.save_state(tmp_path / "ckpt").result()
    b = client()
    b.load_state(tmp_path / "ckpt").result()
    for c in (a, b):
        c.forward_backward(data)
        c.optim_step(ADAM)
    assert_trees_close(params_of(a), params_of(b), atol=0)
    assert int(b.current_state().result().step) == 2


def test_custom_loss_matches_builtin_cross_entropy():
    data = random_datums(4, seed=6)
    builtin, custom = client(), client()
    builtin.forward_backward(data)

    def nll(logp, batch):
        loss = -(logp * batch.inputs["weights"] * batch.mask_BT).sum()
        return loss, {"loss:sum": loss}

    custom.forward_backward_custom(data, nll)
    builtin.optim_step(ADAM), custom.optim_step(ADAM)
    assert_trees_close(params_of(builtin), params_of(custom), atol=1e-6)
