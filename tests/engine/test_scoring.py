"""Unembedding only the positions a loss reads changes nothing the loss or the caller sees."""

import jax
import numpy as np
import pytest

from jaxcook.core.losses import positions_read
from jaxcook.engine.batching import BucketConfig, make_batch
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.lora import LoraConfig
from jaxcook.types import AdamParams, Datum
from tests.engine.tiny import random_datums, tiny_model

SCORED = BucketConfig(seq_buckets=(32,), batch_buckets=(4, 8))
EVERYWHERE = BucketConfig(seq_buckets=(32,), batch_buckets=(4, 8), score_fractions=())
ADAM = AdamParams(learning_rate=1e-2)


def prompt_then_answer(data: list[Datum], answer: int, **rl) -> list[Datum]:
    """The same tokens with every per-token input zeroed before the last `answer` positions."""
    out = []
    for d in data:
        n = d.length
        keep = (np.arange(n) >= n - answer).astype(np.float32)
        inputs = {
            "target_tokens": d.loss_fn_inputs["target_tokens"],
            "weights": d.loss_fn_inputs["weights"] * keep,
        }
        rng = np.random.default_rng(n)
        if rl:
            inputs = {
                "target_tokens": inputs["target_tokens"],
                "advantages": rng.normal(size=n).astype(np.float32) * keep,
                "logprobs": -rng.random(n).astype(np.float32) * keep,
            }
            if rl.get("mask"):
                inputs["mask"] = keep
        out.append(Datum(d.model_input, inputs))
    return out


def run(buckets, data, loss_fn, config=None, pack=False):
    lora = LoraConfig(rank=4)
    c = LocalTrainingClient(tiny_model(lora), lora=lora, buckets=buckets, pack=pack)
    scored_slots = c._batch(data, loss_fn)[0].score_idx_BP.shape[1]
    assert (scored_slots > 0) == bool(buckets.score_fractions)  # SCORED really unembeds a subset
    out = c.forward_backward(data, loss_fn, config).result()
    c.optim_step(ADAM).result()
    return out, jax.device_get(c.current_state().result().params)


CASES = [
    ("cross_entropy", None, {}),
    ("importance_sampling", None, {"rl": True}),
    ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}, {"rl": True}),
    ("cispo", None, {"rl": True}),
    ("dro", {"beta": 0.5}, {"rl": True, "mask": True}),
]


@pytest.mark.parametrize("loss_fn,config,kind", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("pack", [False, True], ids=["padded", "packed"])
def test_scoring_read_positions_equals_scoring_all(loss_fn, config, kind, pack):
    data = random_datums(6, lengths=(10, 30), seed=4)
    data = prompt_then_answer(data, answer=3, **kind)
    got, params = run(SCORED, data, loss_fn, config, pack)
    want, params_all = run(EVERYWHERE, data, loss_fn, config, pack)
    assert got.metrics == pytest.approx(want.metrics, rel=1e-5, abs=1e-6)
    for d, g, w in zip(data, got.loss_fn_outputs, want.loss_fn_outputs, strict=True):
        read = positions_read(loss_fn, d.loss_fn_inputs)
        np.testing.assert_allclose(g["logprobs"][read], w["logprobs"][read], atol=1e-5)
        assert (g["logprobs"][~read] == 0).all()  # not computed: 0, never a stale value
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_all), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_dpo_scored_equals_all():
    data = prompt_then_answer(random_datums(4, lengths=(10, 30), seed=5), answer=4)
    data = [
        Datum(d.model_input, {**d.loss_fn_inputs, "ref_logprobs": -np.ones(d.length, np.float32)})
        for d in data
    ]
    got, params = run(SCORED, data, "dpo", {"beta": 0.3})
    want, params_all = run(EVERYWHERE, data, "dpo", {"beta": 0.3})
    assert got.metrics == pytest.approx(want.metrics, rel=1e-5, abs=1e-6)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_all), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_score_index_picks_the_smallest_fraction_that_holds_the_fullest_row():
    data = random_datums(3, lengths=(20, 30), seed=6)
    scored = [np.arange(d.length) >= d.length - k for d, k in zip(data, (1, 3, 5), strict=True)]
    batch, layout = make_batch(
        data, pack=False, seq_buckets=(32,), batch_buckets=(4,), scored=scored, score_fractions=(0.125, 0.25)
    )
    assert batch.score_idx_BP.shape == (4, 8)  # 5 positions in the fullest row: 0.25 * 32 = 8
    for row, (d, k) in enumerate(zip(data, (1, 3, 5), strict=True)):
        assert batch.score_idx_BP[row, :k].tolist() == list(range(d.length - k, d.length))
        assert (batch.score_idx_BP[row, k:] == 32).all()  # padding: T, dropped on scatter
    assert (batch.score_idx_BP[3] == 32).all()  # the padding row scores nothing
    # A row that needs more than the largest fraction scores every slot ([B, 0]).
    full = make_batch(
        data, pack=False, seq_buckets=(32,), batch_buckets=(4,), scored=[None] * 3, score_fractions=(0.5,)
    )
    assert full[0].score_idx_BP.shape == (4, 0)


def test_positions_read_per_loss():
    w = np.array([0, 0, 1, 2], np.float32)
    assert positions_read("cross_entropy", {"weights": w}).tolist() == [False, False, True, True]
    soft = np.array([[0, 0], [0, 1], [0, 0]], np.float32)
    assert positions_read("cross_entropy", {"weights": soft}).tolist() == [False, True, False]
    rl = {"advantages": np.array([0, 1, 0, 0.0]), "logprobs": np.array([0, -1, -2, 0.0])}
    assert positions_read("ppo", rl).tolist() == [False, True, True, False]
    assert positions_read("dro", rl) is None  # no mask: the penalty reads every position
    assert positions_read("dro", {**rl, "mask": np.array([0, 0, 0, 1.0])}).tolist() == [
        False,
        True,
        True,
        True,
    ]


def test_bad_score_fractions():
    with pytest.raises(ValueError, match="score_fractions"):
        BucketConfig(score_fractions=(0.5, 0.25))
    with pytest.raises(ValueError, match="score_fractions"):
        BucketConfig(score_fractions=(1.0,))
