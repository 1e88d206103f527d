"""Mean NLL and bits per byte against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxcook.data import compute_bpb, compute_mean_nll


def test_mean_nll_hand_computed():
    lps = [np.array([-1.0, -2.0, -3.0]), np.array([-0.5, -1.5])]
    ws = [np.array([0.0, 1.0, 1.0]), np.array([1.0, 0.0])]
    # -(-2 - 3 - 0.5) / (1 + 1 + 1) = 5.5 / 3
    assert compute_mean_nll(lps, ws) == pytest.approx(5.5 / 3)
    # Per-example token-mean weights: mean of the examples' means, (2.5 + 0.5) / 2.
    ws_mean = [np.array([0.0, 0.5, 0.5]), np.array([1.0, 0.0])]
    assert compute_mean_nll(lps, ws_mean) == pytest.approx((2.5 + 0.5) / 2)
    assert math.isnan(compute_mean_nll(lps, [np.zeros(3), np.zeros(2)]))
    with pytest.raises(ValueError, match="datum 1: logprobs shape \\(2,\\) and weights shape \\(3,\\)"):
        compute_mean_nll(lps, [ws[0], np.ones(3)])


def _enc(tokenizer, text):
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_bpb_hand_computed(tokenizer):
    im_end = _enc(tokenizer, "<|im_end|>")
    hello, big, world, llama = (_enc(tokenizer, s) for s in ("Hello", " big", " world", " 🦙"))
    assert len(llama) == 3  # the emoji is split over byte tokens; one alone decodes to U+FFFD
    targets = hello + big + world + llama + im_end
    weights = [0.2] * len(hello) + [0.0] * len(big) + [0.2] * (len(world) + len(llama)) + [0.2]
    lp = -np.arange(1, len(targets) + 1, dtype=np.float64) / 10  # -0.1, -0.2, ...
    counted = np.array(weights) > 0
    counted[-1] = False  # <|im_end|> is special: neither its nats nor bytes count
    nats = -lp[counted].sum()
    # Runs "Hello" and " world 🦙": 5 + (6 + 1 + 4) bytes; " big" is untrained (a gap).
    n_bytes = len("Hello") + len(" world 🦙".encode())
    assert n_bytes == 16
    bpb = compute_bpb([lp], [np.array(weights)], [np.array(targets)], tokenizer)
    assert bpb == pytest.approx(nats / (math.log(2) * n_bytes))
    # Weights are a mask, not multipliers: scaling them changes nothing.
    assert compute_bpb([lp], [np.array(weights) * 7], [np.array(targets)], tokenizer) == pytest.approx(bpb)
    # Two datums add their nats and their bytes.
    two = compute_bpb([lp, lp], [np.array(weights)] * 2, [np.array(targets)] * 2, tokenizer)
    assert two == pytest.approx(bpb)
    assert math.isnan(compute_bpb([lp[-1:]], [np.ones(1)], [np.array(im_end)], tokenizer))
