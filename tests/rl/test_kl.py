"""KL penalty vs a plain loop reference; sampler-vs-trainer KL vs hand values."""

import math

import numpy as np
import pytest

from jaxcook.rl.kl import (
    compute_kl_sample_train,
    discounted_future_sum,
    incorporate_kl_penalty,
    kl_penalty_advantages,
)
from jaxcook.types import Datum, ModelInput


def _reference(lp_D, ref_D, mask_D, adv_D, coef, discount):
    """Token-by-token loops, written independently of the vectorised code."""
    num = den = 0.0
    for lp, ref, m in zip(lp_D, ref_D, mask_D):
        for t in range(len(lp)):
            if m[t] > 0:
                num += (lp[t] - ref[t]) * m[t]
                den += m[t]
    avg = num / den
    out = []
    for lp, ref, m, adv in zip(lp_D, ref_D, mask_D, adv_D):
        x = [coef * m[t] * (avg - ((lp[t] - ref[t]) * m[t] if m[t] > 0 else 0.0)) for t in range(len(lp))]
        new = []
        for t in range(len(lp)):
            total = sum(discount**k * x[t + k] for k in range(len(lp) - t)) if discount > 0 else x[t]
            new.append(adv[t] + total)
        out.append(new)
    return out, avg


def _random_batch(rng, n=4):
    lengths = rng.integers(3, 9, n)
    lp_D = [rng.normal(-1, 0.5, L) for L in lengths]
    ref_D = [rng.normal(-1, 0.5, L) for L in lengths]
    mask_D = [(rng.random(L) < 0.6).astype(float) for L in lengths]
    for m in mask_D:
        m[-1] = 1.0
    adv_D = [np.where(m > 0, rng.normal(), 0.0) for m in mask_D]
    return lp_D, ref_D, mask_D, adv_D


@pytest.mark.parametrize("discount", [0.0, 0.9])
def test_kl_penalty_matches_reference(discount):
    rng = np.random.default_rng(0)
    lp_D, ref_D, mask_D, adv_D = _random_batch(rng)
    got, metrics = kl_penalty_advantages(lp_D, ref_D, mask_D, adv_D, coef=0.3, discount=discount)
    want, avg = _reference(lp_D, ref_D, mask_D, adv_D, 0.3, discount)
    assert metrics["kl_policy_base"] == pytest.approx(avg)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_kl_penalty_hand_values_and_nan_reference_on_prompt():
    # one datum: d = (lp - ref) * mask = [masked, 0.5, -0.1]; avg = 0.4 / 2 = 0.2
    lp = np.array([-1.0, -0.5, -0.3])
    ref = np.array([np.nan, -1.0, -0.2])  # a reference score may be undefined on prompt tokens
    mask = np.array([0.0, 1.0, 1.0])
    adv = np.array([0.0, 1.0, 1.0])
    (new,), metrics = kl_penalty_advantages([lp], [ref], [mask], [adv], coef=2.0)
    assert metrics["kl_policy_base"] == pytest.approx(0.2)
    # advantages += 2 * mask * (0.2 - d): [0, 1 + 2*(0.2-0.5), 1 + 2*(0.2+0.1)] = [0, 0.4, 1.6]
    np.testing.assert_allclose(new, [0.0, 0.4, 1.6], rtol=1e-6)


def test_discounted_future_sum():
    # y_2 = 3, y_1 = 2 + 0.5*3 = 3.5, y_0 = 1 + 0.5*3.5 = 2.75
    np.testing.assert_allclose(discounted_future_sum(np.array([1.0, 2.0, 3.0]), 0.5), [2.75, 3.5, 3.0])


def test_incorporate_kl_penalty_uses_score_callable():
    datum = Datum(
        ModelInput.from_ints([1, 2, 3]),
        {
            "target_tokens": [2, 3, 4],
            "logprobs": [0.0, -0.5, -0.3],
            "advantages": [0.0, 1.0, 1.0],
            "mask": [0.0, 1.0, 1.0],
        },
    )
    seen = []

    def score(data):
        seen.append(len(data))
        return [np.array([0.0, -1.0, -0.2])]

    (new,), metrics = incorporate_kl_penalty([datum], score, coef=2.0)
    assert seen == [1]
    # same numbers as the hand test above
    np.testing.assert_allclose(new.loss_fn_inputs["advantages"], [0.0, 0.4, 1.6], rtol=1e-6)
    np.testing.assert_array_equal(new.loss_fn_inputs["target_tokens"], [2, 3, 4])
    assert metrics["kl_policy_base"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="2 arrays for 1"):
        incorporate_kl_penalty([datum], lambda d: [np.zeros(3)] * 2, coef=1.0)


def test_kl_sample_train():
    sampled = [np.array([-1.0, -2.0, -0.5]), np.array([-0.1, -3.0])]
    train = [np.array([-1.0, -1.5, -0.7]), np.array([-9.0, -2.0])]
    mask = [np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0])]
    m = compute_kl_sample_train(sampled, train, mask)
    # kept diffs: -2+1.5=-0.5, -0.5+0.7=0.2, -3+2=-1.0
    assert m["optim/kl_sample_train_v1"] == pytest.approx((-0.5 + 0.2 - 1.0) / 3)
    assert m["optim/kl_sample_train_v2"] == pytest.approx(0.5 * (0.25 + 0.04 + 1.0) / 3)
    assert m["optim/entropy"] == pytest.approx((2.0 + 0.5 + 3.0) / 3)
    assert all(math.isfinite(v) for v in m.values())
