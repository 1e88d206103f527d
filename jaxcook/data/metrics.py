"""Held-out metrics of supervised data: weighted mean NLL and bits per byte (numpy, host side).

Both take, per datum, the log-probabilities of its target tokens (what a forward pass returns,
aligned with `loss_fn_inputs["target_tokens"]` and `["weights"]`).

- `compute_mean_nll = -sum(lp * w) / sum(w)` over the whole batch. With `reduction="mean"` weights
  (each datum's weights sum to 1) this is the mean over datums of their token-mean NLL.
- `compute_bpb = sum(-lp) / (ln 2 * bytes)` over the *counted* tokens: trained (`w > 0`, used as a
  mask, not a multiplier, so the reduction does not matter) and not special (end-of-turn markers
  carry no text and their number depends on the template). `bytes` is the UTF-8 length of the text
  of the counted tokens, decoded one contiguous run of counted tokens at a time (a gap is not
  decoded across, and a run keeps multi-byte characters split over tokens whole). Bits per byte
  compares models with different tokenizers; nats per token does not.

Both return NaN when nothing is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def compute_mean_nll(logprobs_list: Sequence[np.ndarray], weights_list: Sequence[np.ndarray]) -> float:
    """`-sum(lp * w) / sum(w)` over every token of every datum; NaN if the weights sum to 0."""
    if len(logprobs_list) != len(weights_list):
        raise ValueError(f"{len(logprobs_list)} logprob arrays but {len(weights_list)} weight arrays")
    total_lp, total_w = 0.0, 0.0
    for k, (lp, w) in enumerate(zip(logprobs_list, weights_list)):
        lp_T, w_T = _pair(lp, w, k, flat=True)  # soft targets [T, K] count every (position, k)
        total_lp += float(np.dot(lp_T, w_T))
        total_w += float(w_T.sum())
    return -total_lp / total_w if total_w > 0 else float("nan")


def special_token_ids(tokenizer) -> frozenset[int]:
    return frozenset(int(t) for t in getattr(tokenizer, "all_special_ids", None) or ())


def counted_mask(target_tokens: np.ndarray, weights: np.ndarray, special_ids: frozenset[int]) -> np.ndarray:
    """The tokens bits per byte counts: trained (`w > 0`) and not special."""
    return (np.asarray(weights) > 0) & ~np.isin(np.asarray(target_tokens), list(special_ids))


def counted_bytes(target_tokens: Sequence[int], mask: np.ndarray, tokenizer) -> int:
    """UTF-8 bytes of the counted tokens' text, decoded per contiguous run of counted tokens."""
    total, run = 0, []
    for tok, counted in zip(list(target_tokens) + [None], list(mask) + [False]):
        if counted:
            run.append(int(tok))
        elif run:
            total += len(tokenizer.decode(run, skip_special_tokens=False).encode("utf-8"))
            run = []
    return total


def compute_bpb(
    logprobs_list: Sequence[np.ndarray],
    weights_list: Sequence[np.ndarray],
    target_tokens_list: Sequence[np.ndarray],
    tokenizer,
) -> float:
    """Bits per byte of the trained, non-special target tokens (see the module docstring)."""
    if not len(logprobs_list) == len(weights_list) == len(target_tokens_list):
        raise ValueError(
            f"lengths differ: {len(logprobs_list)} logprobs, {len(weights_list)} weights, "
            f"{len(target_tokens_list)} target arrays"
        )
    special = special_token_ids(tokenizer)
    nats, n_bytes = 0.0, 0
    for k, (lp, w, tgt) in enumerate(zip(logprobs_list, weights_list, target_tokens_list)):
        lp_T, w_T = _pair(lp, w, k)
        tgt_T = np.asarray(tgt)
        if tgt_T.shape != lp_T.shape:
            raise ValueError(f"datum {k}: target_tokens shape {tgt_T.shape} != logprobs shape {lp_T.shape}")
        mask_T = counted_mask(tgt_T, w_T, special)
        nats -= float(lp_T[mask_T].sum())
        n_bytes += counted_bytes(tgt_T.tolist(), mask_T, tokenizer)
    return nats / (math.log(2) * n_bytes) if n_bytes > 0 else float("nan")


def _pair(lp, w, k: int, *, flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Equal-shape float arrays; 1-D unless `flat` (then `[T, K]` soft targets are flattened)."""
    lp_T, w_T = np.asarray(lp, np.float64), np.asarray(w, np.float64)
    if lp_T.shape != w_T.shape or (lp_T.ndim != 1 and not flat):
        raise ValueError(
            f"datum {k}: logprobs shape {lp_T.shape} and weights shape {w_T.shape} must be equal, 1-D"
        )
    return lp_T.reshape(-1), w_T.reshape(-1)
