"""Losses equal plain numpy implementations of their formulas; padding never counts."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.core import losses
from jaxcook.engine.batching import make_batch, unbatch
from jaxcook.types import Datum, ModelInput

B, T, K = 3, 8, 4


def _token_case(seed=0, soft=False):
    """Random log-probs and inputs with junk (large, non-zero) values on padding positions."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((B, T), np.float32)
    for b, n in enumerate((8, 5, 2)):
        mask[b, :n] = 1.0
    shape = (B, T, K) if soft else (B, T)
    logp = -rng.exponential(1.0, shape).astype(np.float32)
    inputs = {
        "weights": rng.uniform(0, 1, shape).astype(np.float32),
        # sampler log-probs near the learner's so ratios straddle the clip bounds
        "logprobs": (logp + rng.normal(0, 0.4, shape)).astype(np.float32) if not soft else None,
        "advantages": rng.normal(size=(B, T)).astype(np.float32),
        "mask": (rng.uniform(size=(B, T)) > 0.3).astype(np.float32),
    }
    inputs = {k: v for k, v in inputs.items() if v is not None}
    pad = (mask == 0).reshape(mask.shape + (1,) * (len(shape) - 2))
    logp = np.where(pad, 37.0, logp)  # junk log-prob on padding (exp would overflow a product)
    for v in inputs.values():
        v[np.broadcast_to(mask == 0, (B, T)) if v.ndim == 2 else np.broadcast_to(pad, v.shape)] = 5.0
    return logp, inputs, mask


def _np_ratio(logp, inputs, mask):
    return np.exp(np.where(mask > 0, logp.astype(np.float64) - inputs["logprobs"], 0.0))


def _np_losses_and_grads(name, logp, inputs, mask, **cfg):
    """(loss, d loss / d logp) from the formulas in the loss docstrings, in float64."""
    lp = logp.astype(np.float64)
    m = mask
    a = inputs.get("advantages")
    if name == "cross_entropy":
        mm = m if lp.ndim == 2 else m[..., None]
        w = inputs["weights"] * mm
        return np.sum(-w * np.where(mm > 0, lp, 0)), -w
    r = _np_ratio(logp, inputs, mask)
    if name == "importance_sampling":
        return -np.sum(r * a * m), -r * a * m
    if name == "ppo":
        lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
        unclipped, clipped = r * a, np.clip(r, lo, hi) * a
        # Gradient -A r unless the clipped branch is the smaller one (then it is constant in r).
        live = ~(clipped < unclipped)
        return -np.sum(np.minimum(unclipped, clipped) * m), -a * r * live * m
    if name == "cispo":
        lo, hi = cfg.get("clip_low_threshold", 0.0), cfg.get("clip_high_threshold", 4.0)
        c = np.clip(r, lo, hi)
        # sg(c): the ratio's own dependence on log p contributes nothing to the gradient.
        return -np.sum(c * a * np.where(m > 0, lp, 0) * m), -c * a * m
    if name == "dro":
        beta = cfg.get("beta", 0.05)
        pm = inputs["mask"] if "mask" in inputs else m
        d = lp - inputs["logprobs"]
        per = np.where(m > 0, lp * a - 0.5 * beta * pm * d**2, 0.0)
        return -np.sum(per), -(a - beta * pm * d) * m
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name,cfg",
    [
        ("cross_entropy", {}),
        ("importance_sampling", {}),
        ("ppo", {}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.05}),
        ("cispo", {}),
        ("cispo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.1}),
        ("dro", {}),
        ("dro", {"beta": 0.3}),
    ],
)
def test_token_losses_match_numpy(name, cfg):
    logp, inputs, mask = _token_case(seed=1)
    fn = functools.partial(losses.get_loss(name), **cfg)
    (loss, metrics), grad = jax.value_and_grad(lambda lp: fn(lp, inputs, mask), has_aux=True)(
        jnp.asarray(logp)
    )
    want_loss, want_grad = _np_losses_and_grads(name, logp, inputs, mask, **cfg)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss:sum"]), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(grad)[mask == 0] == 0)


def test_ratio_metrics_see_both_clip_sides():
    """The random case exercises the clip: some tokens are clipped, some not (else the test is weak)."""
    logp, inputs, mask = _token_case(seed=1)
    _, m = losses.ppo(logp, inputs, mask)
    r = _np_ratio(logp, inputs, mask)[mask > 0]
    assert 0 < float(m["clipped:sum"]) < mask.sum()
    assert (r < 0.8).any() and (r > 1.2).any()


def test_dro_without_mask_input_uses_mask_bt():
    logp, inputs, mask = _token_case(seed=2)
    del inputs["mask"]
    loss, _ = losses.dro(logp, inputs, mask, beta=0.2)
    np.testing.assert_allclose(
        float(loss), _np_losses_and_grads("dro", logp, inputs, mask, beta=0.2)[0], rtol=1e-5
    )


def test_soft_cross_entropy():
    logp, inputs, mask = _token_case(seed=3, soft=True)
    (loss, _), grad = jax.value_and_grad(lambda lp: losses.cross_entropy(lp, inputs, mask), has_aux=True)(
        logp
    )
    want_loss, want_grad = _np_losses_and_grads("cross_entropy", logp, inputs, mask)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-6)


# --- DPO -------------------------------------------------------------------------------------


def _dpo_data(rng, lengths):
    data, logp, ref = [], [], []
    for n in lengths:
        w = (rng.uniform(size=n) > 0.3).astype(np.float32)  # prompt tokens carry weight 0
        ref.append(-rng.exponential(1.0, n).astype(np.float32))
        logp.append((ref[-1] + rng.normal(0, 0.5, n)).astype(np.float32))
        data.append(
            Datum(
                ModelInput.from_ints(rng.integers(1, 100, n).tolist()),
                {"target_tokens": rng.integers(1, 100, n), "weights": w, "ref_logprobs": ref[-1]},
            )
        )
    return data, logp


def _scatter(layout, per_datum, fill):
    out = np.full((layout.batch_size, layout.seq_len), fill, np.float32)
    for r, s, x in zip(layout.rows_N, layout.starts_N, per_datum):
        out[r, s : s + len(x)] = x
    return out


def _np_dpo(data, logp, beta):
    """Loss and d loss / d logp per datum, from L = mean_i -log sigmoid(beta (dc - dr))."""
    n_pairs = len(data) // 2
    w = [d.loss_fn_inputs["weights"] for d in data]
    delta = [
        np.dot(w[i], logp[i]) - np.dot(w[i], data[i].loss_fn_inputs["ref_logprobs"]) for i in range(len(data))
    ]
    loss, grads = 0.0, [np.zeros_like(x, np.float64) for x in logp]
    for p in range(n_pairs):
        margin = beta * (delta[2 * p] - delta[2 * p + 1])
        loss += np.log1p(np.exp(-margin)) / n_pairs
        g = -(1 - 1 / (1 + np.exp(-margin))) * beta / n_pairs  # d/d margin-input of -log sigmoid
        grads[2 * p] += g * w[2 * p]
        grads[2 * p + 1] -= g * w[2 * p + 1]
    return loss, grads


def _run_dpo(data, logp, pack, beta=0.1, **kw):
    batch, layout = make_batch(data, pack=pack, seq_buckets=(16, 32, 64), batch_buckets=(1, 2, 4, 8, 16))
    fn = functools.partial(
        losses.dpo,
        batch_inputs=batch.inputs,
        mask_BT=batch.mask_BT,
        datum_ids_BT=batch.datum_ids_BT,
        datum_valid_D=batch.datum_valid_D,
        beta=beta,
        **kw,
    )
    logp_BT = jnp.asarray(_scatter(layout, logp, fill=-50.0))  # junk log-prob on padding
    (loss, metrics), grad_BT = jax.value_and_grad(lambda lp: fn(lp), has_aux=True)(logp_BT)
    return loss, metrics, unbatch(layout, grad_BT)


@pytest.mark.parametrize("pack", [False, True])
def test_dpo_matches_numpy(pack):
    rng = np.random.default_rng(4)
    data, logp = _dpo_data(rng, [7, 12, 3, 9, 15, 4, 6, 6, 5])  # 4 pairs + 1 odd datum, dropped
    loss, metrics, grads = _run_dpo(data, logp, pack, beta=0.3)
    want_loss, want_grads = _np_dpo(data[:8], logp[:8], beta=0.3)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    for got, want in zip(grads, [*want_grads, np.zeros(5)]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    w = [d.loss_fn_inputs["weights"] for d in data]
    rewards = [0.3 * np.dot(w[i], logp[i] - d.loss_fn_inputs["ref_logprobs"]) for i, d in enumerate(data)]
    chosen, rejected = np.array(rewards[0:8:2]), np.array(rewards[1:8:2])
    np.testing.assert_allclose(float(metrics["chosen_reward"]), chosen.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["rejected_reward"]), rejected.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["margin"]), (chosen - rejected).mean(), rtol=1e-5, atol=1e-6)
    assert float(metrics["accuracy"]) == np.mean(chosen > rejected)
    assert float(metrics["num_pairs"]) == 4


def test_dpo_policy_equals_reference():
    """All rewards are 0: loss = -log sigmoid(0) = log 2; ties count as wrong, so accuracy = 0."""
    rng = np.random.default_rng(5)
    data, _ = _dpo_data(rng, [5, 8, 3, 3])
    logp = [d.loss_fn_inputs["ref_logprobs"] for d in data]
    for pack in (False, True):
        _, metrics, _ = _run_dpo(data, logp, pack, beta=0.1)
        np.testing.assert_allclose(float(metrics["dpo_loss"]), math.log(2), rtol=1e-6)
        assert float(metrics["accuracy"]) == 0.0 and float(metrics["margin"]) == 0.0
        assert float(metrics["num_pairs"]) == 2


def test_dpo_hand_computed():
    # One pair, beta 0.1. Chosen: weights (0, 1, 1), logp - ref = (9, 1, 1) -> delta_c = 2.
    # Rejected: weights (1, 1), logp - ref = (-1, -2) -> delta_r = -3. margin = 0.1 * 5 = 0.5;
    # loss = log(1 + e^-0.5) = log(1.6065307) = 0.4740770.
    def datum(w, ref):
        n = len(w)
        return Datum(
            ModelInput.from_ints([1] * n), {"target_tokens": [1] * n, "weights": w, "ref_logprobs": ref}
        )

    data = [datum([0, 1, 1], [-1.0, -2.0, -3.0]), datum([1, 1], [-1.0, -1.0])]
    logp = [np.array([8.0, -1.0, -2.0], np.float32), np.array([-2.0, -3.0], np.float32)]
    loss, metrics, _ = _run_dpo(data, logp, pack=False, beta=0.1)
    np.testing.assert_allclose(float(loss), 0.4740770, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["margin"]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["chosen_reward"]), 0.2, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["rejected_reward"]), -0.3, rtol=1e-6)
    assert float(metrics["accuracy"]) == 1.0


def test_dpo_microbatches_sum_to_full_batch():
    rng = np.random.default_rng(6)
    data, logp = _dpo_data(rng, [4, 6, 8, 3, 5, 5, 7, 2])
    full_loss, _, full_grads = _run_dpo(data, logp, pack=True)
    parts = [_run_dpo(data[i : i + 4], logp[i : i + 4], pack=True, num_pairs_total=4.0) for i in (0, 4)]
    np.testing.assert_allclose(float(parts[0][0] + parts[1][0]), float(full_loss), rtol=1e-6)
    for got, want in zip(parts[0][2] + parts[1][2], full_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


# --- registry --------------------------------------------------------------------------------


def test_registry_and_validation():
    assert set(losses.LOSSES) == set(losses.REQUIRED_INPUTS)
    with pytest.raises(KeyError, match=r"unknown loss 'grpo'; valid losses: \['cispo', 'cross_entropy'"):
        losses.get_loss("grpo")
    with pytest.raises(KeyError, match=r"loss 'ppo' needs .* missing \['advantages'\]"):
        losses.check_loss_inputs("ppo", {"target_tokens", "logprobs"})
    losses.check_loss_inputs("dpo", {"target_tokens", "weights", "ref_logprobs"})
    with pytest.raises(KeyError, match=r"no config keys \['clip_low'\]; valid keys: \['clip_high_threshold'"):
        losses.check_loss_config("ppo", {"clip_low": 0.9})
    assert losses.check_loss_config("cispo", None) == {"clip_low_threshold": 0.0, "clip_high_threshold": 4.0}
    assert losses.check_loss_config("dpo", {"beta": 0.5}) == {"beta": 0.5, "num_pairs_total": None}
    assert losses.check_loss_config("cross_entropy", {}) == {}
