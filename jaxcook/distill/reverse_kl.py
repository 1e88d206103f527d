"""Reverse-KL advantages of on-policy distillation, and their metrics (numpy, host side).

Per token t of a datum (mask m_t = 1 on the student's sampled tokens, 0 on prompt tokens):

    d_t  = (log p_student(x_t) - log p_teacher(x_t)) * m_t   (one-sample estimate of KL(student || teacher))
    x_t  = -coef * d_t
    A_t += x_t                           (discount = 0)
    A_t += sum_k discount^k x_{t+k}      (discount > 0: a token also pays for the tokens it leads to)

`log p_student` is the sampler's log-prob of the sampled token (the datum's `logprobs`). Unlike the
RL KL penalty (`jaxcook.rl.kl`) nothing is centred: the advantage is the teacher's per-token
verdict itself, so tokens the teacher finds likelier than the student does are reinforced. The
metric `teacher_kl` is sum d / sum m over the batch (nats per sampled token).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxcook.rl.kl import discounted_future_sum


def reverse_kl_advantages(
    student_lp_D: Sequence[np.ndarray],
    teacher_lp_D: Sequence[np.ndarray],
    mask_D: Sequence[np.ndarray],
    advantages_D: Sequence[np.ndarray],
    *,
    coef: float,
    discount: float = 0.0,
) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """New per-datum advantages (float32), and per datum `(sum_t d_t, sum_t m_t)`."""
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"kl discount must be in [0, 1), got {discount}")
    n = len(student_lp_D)
    if not (len(teacher_lp_D) == len(mask_D) == len(advantages_D) == n):
        raise ValueError(
            f"reverse_kl_advantages: {n} student logprobs, {len(teacher_lp_D)} teacher logprobs, "
            f"{len(mask_D)} masks, {len(advantages_D)} advantages; all must match"
        )
    new_D, sums_D = [], []
    for i, (s, t, m, a) in enumerate(zip(student_lp_D, teacher_lp_D, mask_D, advantages_D)):
        s, t, m, a = (np.asarray(x, np.float64) for x in (s, t, m, a))
        if not s.shape == t.shape == m.shape == a.shape:
            raise ValueError(
                f"datum {i}: student logprobs {s.shape}, teacher logprobs {t.shape}, mask {m.shape}, "
                f"advantages {a.shape} differ"
            )
        # where(): the teacher's scores of prompt positions are not used (and may be anything).
        d_T = np.where(m > 0, (s - t) * m, 0.0)
        x_T = -coef * d_T
        if discount > 0:
            x_T = discounted_future_sum(x_T, discount)
        new_D.append((a + x_T).astype(np.float32))
        sums_D.append((float(d_T.sum()), float(m.sum())))
    return new_D, sums_D


def teacher_kl_metrics(
    sums_D: Sequence[tuple[float, float]], dataset_D: Sequence[int], *, prefix: str = "teacher_kl"
) -> dict[str, float]:
    """`prefix` (all datums) and `prefix/dataset_i` (datums of dataset i): token-weighted mean KL."""
    if len(sums_D) != len(dataset_D):
        raise ValueError(f"teacher_kl_metrics: {len(sums_D)} sums but {len(dataset_D)} dataset indices")
    kl = np.asarray([s for s, _ in sums_D], np.float64).reshape(-1)
    tokens = np.asarray([n for _, n in sums_D], np.float64).reshape(-1)
    idx = np.asarray(dataset_D, np.int64).reshape(-1)
    metrics = {}
    if tokens.sum() > 0:
        metrics[prefix] = float(kl.sum() / tokens.sum())
    for i in sorted(set(idx.tolist())):
        n = tokens[idx == i].sum()
        if n > 0:
            metrics[f"{prefix}/dataset_{i}"] = float(kl[idx == i].sum() / n)
    return metrics
