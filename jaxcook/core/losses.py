"""Training losses: pure functions of per-token target log-probs and the batch's loss inputs.

Every loss has the signature

    loss(target_logprobs, batch_inputs, mask_BT, **config) -> (loss_scalar, metrics)

`target_logprobs` is log p(target) under the current model, f32 `[B, T]` (or `[B, T, K]` for
soft cross-entropy); `batch_inputs` is `Batch.inputs` (f32 `[B, T]` / `[B, T, K]`, zero on
padding); `mask_BT` is 1 on real positions. Like Tinker, token losses are sums over tokens and
datums (no mean): per-token or per-example normalisation is carried by the weights/advantages
the data layer emits. Positions where `mask_BT == 0` never count, whatever their log-prob.
`dpo` also takes the per-datum axis (`datum_ids_BT`, `datum_valid_D`); see `PER_DATUM_LOSSES`.

Notation: p = learner prob of the target, q = sampler prob (`logprobs` input), A = `advantages`,
r = p / q = exp(log p - log q), sg = stop-gradient. Metrics are JAX scalars; keys end in `:sum`
when they add up across microbatches.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np


def _masked(x_BT, mask_BT):
    """Zero out padding with `where` (not a product) so a non-finite value there cannot leak."""
    mask = mask_BT.reshape(mask_BT.shape + (1,) * (x_BT.ndim - mask_BT.ndim))
    return jnp.where(mask > 0, x_BT, 0.0)


def _ratio(logp_BT, inputs, mask_BT):
    """r = exp(log p - log q), computed only on real positions (1 on padding)."""
    return jnp.exp(_masked(logp_BT - inputs["logprobs"], mask_BT))


def cross_entropy(target_logprobs, batch_inputs, mask_BT):
    """Weighted negative log-likelihood: L = sum_n -w_n log p(x_n).

    With soft targets (`[B, T, K]` log-probs and weights): L = sum_n sum_k -w[n,k] log p(x[n,k]).
    """
    w = batch_inputs["weights"]
    loss = jnp.sum(_masked(-w * target_logprobs, mask_BT))
    return loss, {"loss:sum": loss, "weights:sum": jnp.sum(_masked(w, mask_BT))}


def importance_sampling(target_logprobs, batch_inputs, mask_BT):
    """Off-policy REINFORCE with an importance ratio: L = -sum_t r_t A_t, r_t = p_t / q_t."""
    ratio_BT = _ratio(target_logprobs, batch_inputs, mask_BT)
    loss = -jnp.sum(_masked(ratio_BT * batch_inputs["advantages"], mask_BT))
    return loss, {"loss:sum": loss}


def ppo(target_logprobs, batch_inputs, mask_BT, *, clip_low_threshold=0.8, clip_high_threshold=1.2):
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), token-wise and summed:

    L = -sum_t min(r_t A_t, clip(r_t, lo, hi) A_t), with lo/hi the ratio bounds themselves
    (Tinker's `clip_low_threshold` / `clip_high_threshold`, i.e. 1 - eps_low / 1 + eps_high).
    """
    ratio_BT = _ratio(target_logprobs, batch_inputs, mask_BT)
    adv_BT = batch_inputs["advantages"]
    clipped_BT = jnp.clip(ratio_BT, clip_low_threshold, clip_high_threshold)
    surrogate_BT = jnp.minimum(ratio_BT * adv_BT, clipped_BT * adv_BT)
    loss = -jnp.sum(_masked(surrogate_BT, mask_BT))
    # Tokens whose gradient the clip removed: the clipped branch is strictly the smaller one.
    is_clipped_BT = (clipped_BT * adv_BT < ratio_BT * adv_BT).astype(jnp.float32)
    return loss, {"loss:sum": loss, "clipped:sum": jnp.sum(_masked(is_clipped_BT, mask_BT))}


def cispo(target_logprobs, batch_inputs, mask_BT, *, clip_low_threshold=0.0, clip_high_threshold=4.0):
    """CISPO (MiniMax-M1, 2025, eq. 4): REINFORCE weighted by a clipped, detached ratio:

    L = -sum_t sg(clip(r_t, lo, hi)) A_t log p_t, so every token keeps a gradient.
    """
    ratio_BT = _ratio(target_logprobs, batch_inputs, mask_BT)
    weight_BT = jax.lax.stop_gradient(jnp.clip(ratio_BT, clip_low_threshold, clip_high_threshold))
    loss = -jnp.sum(_masked(weight_BT * batch_inputs["advantages"] * target_logprobs, mask_BT))
    is_clipped_BT = ((ratio_BT < clip_low_threshold) | (ratio_BT > clip_high_threshold)).astype(jnp.float32)
    return loss, {"loss:sum": loss, "clipped:sum": jnp.sum(_masked(is_clipped_BT, mask_BT))}


def dro(target_logprobs, batch_inputs, mask_BT, *, beta=0.05):
    """Direct reward optimisation with a quadratic off-policy penalty (Tinker's `dro`):

    L = -sum_t [log p_t A_t - 0.5 beta m_t (log p_t - log q_t)^2].

    m_t is the `mask` loss input when present (RL datums set it to 1 on action tokens only), else
    `mask_BT`: the penalty otherwise would pull prompt tokens (where q is 0 by convention, not a
    sampler log-prob) towards log p = 0.
    """
    penalty_mask_BT = batch_inputs.get("mask", mask_BT)
    diff_BT = target_logprobs - batch_inputs["logprobs"]
    per_token_BT = target_logprobs * batch_inputs["advantages"] - 0.5 * beta * penalty_mask_BT * diff_BT**2
    loss = -jnp.sum(_masked(per_token_BT, mask_BT))
    penalty = jnp.sum(_masked(0.5 * beta * penalty_mask_BT * diff_BT**2, mask_BT))
    return loss, {"loss:sum": loss, "dro_penalty:sum": penalty}


def dpo(
    target_logprobs,
    batch_inputs,
    mask_BT,
    *,
    datum_ids_BT,
    datum_valid_D,
    beta=0.1,
    num_pairs_total=None,
):
    """Direct preference optimisation (Rafailov et al. 2023, eq. 7) over pairs of datums.

    Datum 2i is the chosen and 2i+1 the rejected completion. Sequence log-prob
    pi = sum_t w_t log p_t (`weights`), ref = sum_t w_t ref_t (`ref_logprobs`), delta = pi - ref;
    L = mean_i -log sigmoid(beta * (delta_{2i} - delta_{2i+1})).

    A pair counts only if both datums are valid (`datum_valid_D`), so a trailing odd datum is
    dropped, as the cookbook does. `num_pairs_total` (optional, may be traced): divide the summed
    pair losses by it instead of this batch's pair count, so pairs split over microbatches sum to
    the full-batch loss and gradient. Metrics (means over this batch's pairs): `dpo_loss`;
    `accuracy` = fraction with beta*delta_c > beta*delta_r strictly (a tie, e.g. policy ==
    reference, counts as wrong: accuracy 0 at step 0); `margin` = mean(beta*delta_c -
    beta*delta_r); `chosen_reward` = mean(beta*delta_c); `rejected_reward`; `num_pairs`.
    """
    num_d = datum_valid_D.shape[0]
    w_BT = _masked(batch_inputs["weights"], mask_BT)
    ids_BT = jnp.where(mask_BT > 0, datum_ids_BT, num_d)  # padding -> an extra, dropped segment
    # Per-datum sums over tokens: [B, T] -> [D + 1]; the last slot collects padding.
    pi_D = jax.ops.segment_sum(_masked(w_BT * target_logprobs, mask_BT).ravel(), ids_BT.ravel(), num_d + 1)
    ref_D = jax.ops.segment_sum(
        w_BT.ravel() * batch_inputs["ref_logprobs"].ravel(), ids_BT.ravel(), num_d + 1
    )
    reward_D = beta * (pi_D[:num_d] - ref_D[:num_d])
    valid_D = datum_valid_D
    if num_d % 2:  # pad to an even number of slots so they reshape into pairs
        reward_D = jnp.append(reward_D, 0.0)
        valid_D = jnp.append(valid_D, 0.0)
    reward_P2 = reward_D.reshape(-1, 2)  # [pairs, (chosen, rejected)]
    pair_valid_P = valid_D.reshape(-1, 2).min(axis=1)
    margin_P = reward_P2[:, 0] - reward_P2[:, 1]
    loss_P = -jax.nn.log_sigmoid(margin_P)
    num_pairs = jnp.sum(pair_valid_P)
    denom = jnp.maximum(num_pairs, 1.0)

    def mean(x_P):
        return jnp.sum(jnp.where(pair_valid_P > 0, x_P, 0.0)) / denom

    dpo_loss = mean(loss_P)
    loss = dpo_loss if num_pairs_total is None else mean(loss_P) * denom / num_pairs_total
    metrics = {
        "loss:sum": loss,
        "dpo_loss": dpo_loss,
        "accuracy": mean((margin_P > 0).astype(jnp.float32)),
        "margin": mean(margin_P),
        "chosen_reward": mean(reward_P2[:, 0]),
        "rejected_reward": mean(reward_P2[:, 1]),
        "num_pairs": num_pairs,
    }
    return loss, metrics


LOSSES = {
    "cross_entropy": cross_entropy,
    "importance_sampling": importance_sampling,
    "ppo": ppo,
    "cispo": cispo,
    "dro": dro,
    "dpo": dpo,
}

# Loss inputs each loss reads (besides the mask); `target_tokens` is needed to get log p at all.
REQUIRED_INPUTS = {
    "cross_entropy": ("target_tokens", "weights"),
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
    "cispo": ("target_tokens", "logprobs", "advantages"),
    "dro": ("target_tokens", "logprobs", "advantages"),
    "dpo": ("target_tokens", "weights", "ref_logprobs"),
}

# Losses that also take `datum_ids_BT=` and `datum_valid_D=` (they reduce per datum).
PER_DATUM_LOSSES = frozenset({"dpo"})
_BATCH_KWARGS = frozenset({"datum_ids_BT", "datum_valid_D"})


def get_loss(name: str):
    """The loss function registered under `name`."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    return LOSSES[name]


def check_loss_inputs(name: str, keys) -> None:
    """Raise if the loss_fn_inputs `keys` (of a datum or batch) lack one the loss `name` needs."""
    get_loss(name)
    missing = [k for k in REQUIRED_INPUTS[name] if k not in keys]
    if missing:
        raise KeyError(
            f"loss {name!r} needs loss_fn_inputs {list(REQUIRED_INPUTS[name])}; missing {missing} "
            f"(got {sorted(keys)})"
        )


def loss_config_defaults(name: str) -> dict[str, object]:
    """The loss's `loss_fn_config` keys and their defaults (batch kwargs of `dpo` excluded)."""
    params = inspect.signature(get_loss(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _BATCH_KWARGS
    }


def check_loss_config(name: str, config: dict | None) -> dict[str, object]:
    """Validate a `loss_fn_config` against the loss's keyword arguments; -> the full config."""
    defaults = loss_config_defaults(name)
    unknown = sorted(set(config or {}) - set(defaults))
    if unknown:
        raise KeyError(f"loss {name!r} has no config keys {unknown}; valid keys: {sorted(defaults)}")
    return {**defaults, **(config or {})}


def positions_read(name: str, inputs) -> np.ndarray | None:
    """The positions of one datum whose log-prob the loss `name` reads (bool `[T]`), from its
    `loss_fn_inputs` (host arrays); None when it reads every position.

    A position outside this set changes neither the loss, nor its gradient, nor its metrics,
    whatever its log-prob, so the trainer need not unembed it: `cross_entropy` and `dpo` read
    nonzero `weights`; the RL losses read nonzero `advantages`, sampler `logprobs` or `mask`
    (`dro` without a `mask` input penalises every position, so it reads them all).
    """

    def nonzero(key):
        a = np.asarray(inputs[key])
        return (a != 0).any(axis=tuple(range(1, a.ndim))) if a.ndim > 1 else a != 0

    if name in ("cross_entropy", "dpo"):
        return nonzero("weights")
    if "advantages" in REQUIRED_INPUTS.get(name, ()):  # the RL losses
        if name == "dro" and "mask" not in inputs:
            return None
        read = nonzero("advantages") | nonzero("logprobs")
        return read | nonzero("mask") if "mask" in inputs else read
    return None
