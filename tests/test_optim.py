"""The optimizer equals torch.optim.AdamW (+ clip_grad_norm_); schedules equal their formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxcook.core.optim import adam_hparams, make_optimizer, optimizer_metrics
from jaxcook.core.schedules import SCHEDULES, lr_multiplier
from jaxcook.types import AdamParams

SHAPES = {"w": (5, 3), "b": (3,), "emb": (7, 2)}


def _torch_run(params0, grads_seq, adams):
    """Reference: torch's clip_grad_norm_ then AdamW.step, with per-step hyperparameters."""
    tparams = {k: torch.nn.Parameter(torch.tensor(v, dtype=torch.float64)) for k, v in params0.items()}
    a0 = adams[0]
    opt = torch.optim.AdamW(
        list(tparams.values()),
        lr=a0.learning_rate,
        betas=(a0.beta1, a0.beta2),
        eps=a0.eps,
        weight_decay=a0.weight_decay,
    )
    for grads, adam in zip(grads_seq, adams):
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k], dtype=torch.float64)
        if adam.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(tparams.values()), adam.grad_clip_norm)
        for group in opt.param_groups:
            group["lr"] = adam.learning_rate
        opt.step()
    return {k: p.detach().numpy() for k, p in tparams.items()}


def _jax_run(params0, grads_seq, adams):
    tx = make_optimizer()

    @jax.jit
    def step(params, opt_state, grads, hparams):
        updates, opt_state = tx.update(grads, opt_state, params, hparams=hparams)
        new_params = optax.apply_updates(params, updates)
        return new_params, opt_state, optimizer_metrics(grads, updates, params, hparams)

    params = jax.tree.map(jnp.asarray, params0)
    opt_state = tx.init(params)
    metrics = []
    for grads, adam in zip(grads_seq, adams):
        params, opt_state, m = step(params, opt_state, grads, adam_hparams(adam))
        metrics.append(m)
    return jax.tree.map(np.asarray, params), metrics, step


def _problem(seed, steps):
    rng = np.random.default_rng(seed)
    params0 = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    grads_seq = [{k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(steps)]
    return params0, grads_seq


@pytest.mark.parametrize(
    "adam",
    [
        AdamParams(),  # Tinker defaults: betas (0.9, 0.95), eps 1e-12, no decay, no clipping
        AdamParams(learning_rate=3e-2, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=0.1),
        # global grad norm is ~sqrt(15 + 3 + 14) ~ 5.7: a max norm of 1 clips every step
        AdamParams(learning_rate=1e-2, weight_decay=0.01, grad_clip_norm=1.0),
        AdamParams(learning_rate=1e-2, grad_clip_norm=100.0),  # clipping on but inactive
    ],
)
def test_matches_torch_adamw(adam):
    params0, grads_seq = _problem(0, steps=5)
    # The learning rate changes every step (a linear decay), as in a real run.
    adams = [
        AdamParams(**{**adam.__dict__, "learning_rate": adam.learning_rate * lr_multiplier("linear", i, 5)})
        for i in range(5)
    ]
    want = _torch_run(params0, grads_seq, adams)
    got, metrics, step = _jax_run(params0, grads_seq, adams)
    for k in SHAPES:
        assert not np.allclose(got[k], params0[k])
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6)
    assert step._cache_size() == 1  # new hyperparameter values every step, one compilation
    norm0 = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads_seq[0].values()))
    np.testing.assert_allclose(float(metrics[0]["optim/grad_norm"]), norm0, rtol=1e-5)
    np.testing.assert_allclose(float(metrics[1]["optim/lr"]), adams[1].learning_rate, rtol=1e-6)
    want_scale = min(1.0, adam.grad_clip_norm / (norm0 + 1e-6)) if adam.grad_clip_norm > 0 else 1.0
    np.testing.assert_allclose(float(metrics[0]["optim/clip_scale"]), want_scale, rtol=1e-5)


def test_clip_zero_is_off():
    """grad_clip_norm=0 leaves huge gradients alone: same result as an unclipped torch AdamW."""
    params0, grads_seq = _problem(1, steps=3)
    grads_seq = [{k: 1e3 * g for k, g in gs.items()} for gs in grads_seq]
    adams = [AdamParams(learning_rate=1e-2, weight_decay=0.05, grad_clip_norm=0.0)] * 3
    got, metrics, _ = _jax_run(params0, grads_seq, adams)
    want = _torch_run(params0, grads_seq, adams)
    for k in SHAPES:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=1e-6)
    assert float(metrics[0]["optim/clip_scale"]) == 1.0


def test_adam_hparams():
    hp = adam_hparams(AdamParams(learning_rate=2e-4, beta2=0.99))
    assert set(hp) == {"learning_rate", "b1", "b2", "eps", "weight_decay", "grad_clip_norm"}
    assert all(v.dtype == np.float32 and v.shape == () for v in hp.values())
    assert float(hp["b2"]) == np.float32(0.99)
    with pytest.raises(ValueError, match=r"AdamParams.beta1=1.0 is out of range"):
        adam_hparams(AdamParams(beta1=1.0))
    with pytest.raises(ValueError, match=r"AdamParams.grad_clip_norm=-1.0"):
        adam_hparams(AdamParams(grad_clip_norm=-1.0))


# --- schedules -------------------------------------------------------------------------------


def test_schedules_formulas():
    total = 10
    for step in range(total):
        assert lr_multiplier("constant", step, total) == 1.0
        assert lr_multiplier("linear", step, total) == pytest.approx(1 - step / total)
        assert lr_multiplier("cosine", step, total) == pytest.approx(
            0.5 * (1 + math.cos(math.pi * step / total))
        )
    # Warmup 4 of 12 steps: 0, 1/4, 2/4, 3/4, then linear over the remaining 8: 1, 7/8, 6/8, ...
    got = [lr_multiplier("linear", s, 12, warmup_steps=4) for s in range(12)]
    assert got == pytest.approx([0, 0.25, 0.5, 0.75, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert lr_multiplier("cosine", 20, 10) == pytest.approx(0.0)  # past the end: clamped


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_under_jit_equal_python(name):
    steps = jnp.arange(15)
    got = jax.jit(lambda s: lr_multiplier(name, s, 12, warmup_steps=3))(steps)
    want = [lr_multiplier(name, s, 12, warmup_steps=3) for s in range(15)]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-7)


def test_schedule_errors():
    with pytest.raises(
        KeyError, match=r"unknown lr schedule 'step'; valid schedules: \['constant', 'cosine'"
    ):
        lr_multiplier("step", 0, 10)
    with pytest.raises(ValueError, match=r"total_steps must be > 0"):
        lr_multiplier("linear", 0, 0)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=10\)"):
        lr_multiplier("linear", 0, 10, warmup_steps=10)
