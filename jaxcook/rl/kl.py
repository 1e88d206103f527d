"""KL terms of RL: the reference-policy KL penalty (reward shaping) and sampler-vs-trainer KL.

KL penalty (per token t of each datum, over the whole batch):

    d_t   = (logp_sampled_t - logp_ref_t) * mask_t          (sample estimate of KL(pi || ref))
    avg   = sum_{datums, t} d_t / sum_{datums, t} mask_t    (logged as `kl_policy_base`)
    x_t   = coef * mask_t * (avg - d_t)
    A_t  += x_t                       (discount = 0)
    A_t  += sum_k discount^k x_{t+k}  (discount > 0: each token also pays for later tokens)

It is a penalty on the advantages, not a loss term: tokens more likely under the policy than
under the reference (d_t above average) get their advantage lowered. The reference
log-probabilities come from a `score(datums) -> list[array]` callable (target-token logprobs
aligned with each datum's `target_tokens`), so this module does no model work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jaxcook.types import Datum

ScoreFn = Callable[[Sequence[Datum]], Sequence[np.ndarray]]


def discounted_future_sum(x_T: np.ndarray, discount: float) -> np.ndarray:
    """`y_t = sum_{k>=0} discount^k x_{t+k}` (y_t = x_t + discount * y_{t+1})."""
    y_T = np.zeros_like(x_T, dtype=np.float64)
    running = 0.0
    for t in range(len(x_T) - 1, -1, -1):
        running = float(x_T[t]) + discount * running
        y_T[t] = running
    return y_T


def kl_penalty_advantages(
    logprobs_D: Sequence[np.ndarray],
    ref_logprobs_D: Sequence[np.ndarray],
    mask_D: Sequence[np.ndarray],
    advantages_D: Sequence[np.ndarray],
    *,
    coef: float,
    discount: float = 0.0,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """New per-datum advantages with the KL penalty added, and `{"kl_policy_base": avg}`."""
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"kl discount must be in [0, 1), got {discount}")
    n = len(logprobs_D)
    if not (len(ref_logprobs_D) == len(mask_D) == len(advantages_D) == n):
        raise ValueError(
            f"kl_penalty_advantages: {n} logprobs, {len(ref_logprobs_D)} reference logprobs, "
            f"{len(mask_D)} masks, {len(advantages_D)} advantages; all must match"
        )
    diffs_D = []
    for i, (lp, ref, m) in enumerate(zip(logprobs_D, ref_logprobs_D, mask_D)):
        lp, ref, m = (np.asarray(a, np.float64) for a in (lp, ref, m))
        if not lp.shape == ref.shape == m.shape:
            raise ValueError(
                f"datum {i}: logprobs {lp.shape}, reference logprobs {ref.shape}, mask {m.shape} differ"
            )
        # where(): reference scores of masked (prompt) positions may be undefined (NaN).
        diffs_D.append(np.where(m > 0, (lp - ref) * m, 0.0))
    total_mask = float(sum(np.asarray(m, np.float64).sum() for m in mask_D))
    if total_mask <= 0:
        raise ValueError("kl_penalty_advantages: the mask is zero everywhere (no sampled tokens)")
    avg = float(sum(d.sum() for d in diffs_D)) / total_mask
    new_D = []
    for d, m, adv in zip(diffs_D, mask_D, advantages_D):
        x = coef * np.asarray(m, np.float64) * (avg - d)
        if discount > 0:
            x = discounted_future_sum(x, discount)
        new_D.append((np.asarray(adv, np.float64) + x).astype(np.float32))
    return new_D, {"kl_policy_base": avg}


def incorporate_kl_penalty(
    data_D: Sequence[Datum], score: ScoreFn, *, coef: float, discount: float = 0.0
) -> tuple[list[Datum], dict[str, float]]:
    """Score `data_D` under the reference with `score` and add the KL penalty to the advantages."""
    ref_D = list(score(data_D))
    if len(ref_D) != len(data_D):
        raise ValueError(f"score returned {len(ref_D)} arrays for {len(data_D)} datums")
    for i, d in enumerate(data_D):
        for key in ("logprobs", "mask", "advantages"):
            if key not in d.loss_fn_inputs:
                raise KeyError(
                    f"datum {i} has no loss_fn_inputs[{key!r}] (build the data with assemble_training_data)"
                )
    new_adv_D, metrics = kl_penalty_advantages(
        [d.loss_fn_inputs["logprobs"] for d in data_D],
        ref_D,
        [d.loss_fn_inputs["mask"] for d in data_D],
        [d.loss_fn_inputs["advantages"] for d in data_D],
        coef=coef,
        discount=discount,
    )
    new_data = [
        Datum(d.model_input, {**d.loss_fn_inputs, "advantages": adv}) for d, adv in zip(data_D, new_adv_D)
    ]
    return new_data, metrics


def compute_kl_sample_train(
    sampled_logprobs_D: Sequence[np.ndarray],
    train_logprobs_D: Sequence[np.ndarray],
    mask_D: Sequence[np.ndarray],
) -> dict[str, float]:
    """Sampler-vs-trainer numerics over sampled (mask > 0) tokens of the batch.

    v1 = mean(lp_sample - lp_train), v2 = 0.5 mean((lp_sample - lp_train)^2),
    entropy = -mean(lp_sample). On-policy with matching numerics both KLs are ~0.
    """
    if not len(sampled_logprobs_D) == len(train_logprobs_D) == len(mask_D):
        raise ValueError("compute_kl_sample_train: datum counts differ")
    diffs, sampled = [], []
    for i, (s, t, m) in enumerate(zip(sampled_logprobs_D, train_logprobs_D, mask_D)):
        s, t, m = (np.asarray(a, np.float64) for a in (s, t, m))
        if not s.shape == t.shape == m.shape:
            raise ValueError(f"datum {i}: sampled {s.shape}, train {t.shape}, mask {m.shape} differ")
        keep = m > 0
        diffs.append(s[keep] - t[keep])
        sampled.append(s[keep])
    diff = np.concatenate(diffs) if diffs else np.zeros(0)
    if diff.size == 0:
        raise ValueError("compute_kl_sample_train: no sampled tokens (mask is zero everywhere)")
    return {
        "optim/kl_sample_train_v1": float(diff.mean()),
        "optim/kl_sample_train_v2": float(0.5 * np.mean(diff**2)),
        "optim/entropy": float(-np.concatenate(sampled).mean()),
    }
