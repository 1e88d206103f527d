"""One RL update from rolled-out groups: advantages -> datums -> shaping -> training substeps.

    data, meta, metrics = groups_to_data(groups, ...)         # group-centred advantages, datums
    data, m = shaper(data, meta)                              # KL penalty, teacher KL (optional)
    metrics |= train_on_data(client, data, loss_fn, ...)      # num_substeps x (fwd_bwd + optim)

`train_on_data` also returns the sampler/trainer numerics (`optim/kl_sample_train_v1/v2`,
`optim/entropy`) from the first substep's forward, computed before any update of this batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from jaxcook.rl import (
    assemble_training_data,
    compute_advantages,
    compute_kl_sample_train,
    incorporate_kl_penalty,
    remove_constant_reward_groups,
)
from jaxcook.rl.types import TrajectoryGroup
from jaxcook.types import AdamParams, Datum, ModelInput

# loss_fn -> the loss_fn_inputs it reads (the host-only `mask` goes along for `dro`).
LOSS_KEYS = {
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
    "cispo": ("target_tokens", "logprobs", "advantages"),
    "dro": ("target_tokens", "logprobs", "advantages", "mask"),
}

# shaper(datums, meta) -> (datums with new advantages, metrics); meta as from `groups_to_data`.
Shaper = Callable[[list[Datum], list[dict]], tuple[list[Datum], dict[str, float]]]


def groups_to_data(groups: Sequence[TrajectoryGroup], *, remove_constant: bool):
    """(datums, meta, metrics): group-centred advantages on every datum; `meta[i]` says where datum
    i came from: `{"group_idx", "traj_idx", "tags", "trajectory"}` (for shapers that need it)."""
    kept = remove_constant_reward_groups(groups) if remove_constant else list(groups)
    advantages = compute_advantages(kept)
    data, where = assemble_training_data(kept, advantages)
    meta = [
        {
            **w,
            "tags": kept[w["group_idx"]].tags,
            "trajectory": kept[w["group_idx"]].trajectories_G[w["traj_idx"]],
        }
        for w in where
    ]
    metrics = {"env/all/kept_groups": float(len(kept)), "tokens/num_datums": float(len(data))}
    return data, meta, metrics


def reference_scorer(reference) -> Callable[[Sequence[Datum]], list[np.ndarray]]:
    """`score(datums) -> log-probs of their targets under the reference policy` (for KL shaping):
    one `compute_logprobs_many` of the full sequences on `reference`, a `SamplingClient`, asking
    only for the positions from each datum's first masked target on (0 before it)."""

    def score(data: Sequence[Datum]) -> list[np.ndarray]:
        prompts, last_n = [], []
        for d in data:
            targets = np.asarray(d.loss_fn_inputs["target_tokens"])
            mask = np.asarray(d.loss_fn_inputs["mask"])
            prompts.append(ModelInput.from_ints([*d.model_input.to_ints(), int(targets[-1])]))
            nonzero = np.flatnonzero(mask)
            last_n.append(len(mask) - int(nonzero[0]) if len(nonzero) else 0)
        rows = reference.compute_logprobs_many(prompts, prompt_logprobs_last_n=last_n).result()
        # entry t+1 of the sequence's log-probs is target t's
        return [np.asarray([0.0 if x is None else x for x in lp[1:]], np.float32) for lp in rows]

    return score


def kl_shaper(score, *, coef: float, discount: float) -> Shaper:
    def shape(data: list[Datum], meta: list[dict]):
        return incorporate_kl_penalty(data, score, coef=coef, discount=discount)

    return shape


def _chunks(items: list, n: int) -> list[list]:
    """`n` nearly equal consecutive chunks (no empty ones)."""
    n = max(1, min(n, len(items)))
    bounds = np.linspace(0, len(items), n + 1).astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def submit_forward_backward(
    client, data: list[Datum], *, loss_fn: str, loss_fn_config: dict | None, max_rows: int | None = None
) -> list:
    """Forward/backward futures over `data` in microbatches of at most `max_rows` datums (None: one
    call; the backend splits what its devices cannot take; gradients accumulate, so
    microbatching changes nothing)."""
    keys = LOSS_KEYS[loss_fn]
    rows = max_rows or len(data)
    futures = []
    for i in range(0, len(data), rows):
        micro = [
            Datum(d.model_input, {key: d.loss_fn_inputs[key] for key in keys}) for d in data[i : i + rows]
        ]
        futures.append(client.forward_backward(micro, loss_fn, loss_fn_config))
    return futures


def numerics_metrics(data: Sequence[Datum], outputs) -> dict[str, float]:
    """Sampler-vs-trainer KL and entropy of `data` from its forward/backward outputs."""
    train_lp = [o["logprobs"] for out in outputs for o in out.loss_fn_outputs]
    return compute_kl_sample_train(
        [d.loss_fn_inputs["logprobs"] for d in data], train_lp, [d.loss_fn_inputs["mask"] for d in data]
    )


def train_on_data(
    client,
    data: list[Datum],
    *,
    loss_fn: str,
    loss_fn_config: dict | None,
    adam: AdamParams,
    num_substeps: int = 1,
    max_rows: int | None = None,
) -> dict[str, float]:
    """`num_substeps` optimizer steps over consecutive chunks of `data`; the sampler/trainer
    numerics come from the first substep, before any update of this batch."""
    t0 = time.perf_counter()
    metrics: dict[str, float] = {"train/loss": 0.0}
    for k, chunk in enumerate(_chunks(data, num_substeps)):
        futures = submit_forward_backward(
            client, chunk, loss_fn=loss_fn, loss_fn_config=loss_fn_config, max_rows=max_rows
        )
        optim = client.optim_step(adam)
        outputs = [f.result() for f in futures]
        if k == 0:
            metrics.update(numerics_metrics(chunk, outputs))
        metrics["train/loss"] += sum(o.metrics["loss:sum"] for o in outputs)
        metrics.update(optim.result())
    metrics["time/training_s"] = time.perf_counter() - t0
    return metrics
