"""DPO: preference pairs trained against a fixed reference policy, with held-out evals and resume.

The reference is the policy the run starts from, as tinker-cookbook has it: a sampling client of
the initial weights (with LoRA and no starting checkpoint, the base: fresh adapters are zero;
from `model.load_checkpoint`, or without LoRA, the starting weights). Reference log-probs come
from one `compute_logprobs_many` per batch (the local backend runs the trainer's forward on the
snapshot, sharing the frozen base: no second copy of it);
the policy's from one jitted forward/backward of the `dpo` loss over chosen and rejected
sequences together (`L = mean_pairs -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r)))`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jaxcook.data.accounting import batch_with_counts
from jaxcook.run_result import RunResult
from jaxcook.types import Datum, ModelInput
from jaxcook.workflows.common import ModelOptions, make_setup
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.training_run import TrainingRun

DPO_METRICS = ("dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward")


@dataclass(frozen=True, kw_only=True)
class DPOConfig:
    model: ModelOptions = ModelOptions()
    dataset: str = "reasoning_gym_math"  # registry name, .jsonl comparisons or HF dataset name
    dataset_options: dict[str, Any] = field(default_factory=dict)
    dpo_beta: float = 0.1
    max_length: int = 256
    batch_size: int = 4  # pairs per step (2 x datums)
    num_epochs: int = 1
    max_steps: int | None = 40  # None = every batch of every epoch
    optim: OptimConfig = OptimConfig(learning_rate=1e-4)
    eval_every: int = 10
    seed: int = 0
    run: RunOptions = RunOptions(log_dir="runs/dpo")


def with_reference(reference, data: list[Datum]) -> list[Datum]:
    """The datums with `ref_logprobs`: log-probs of their targets under the reference policy
    (`reference`, a `SamplingClient`), 0 at targets before the first weighted one."""
    import numpy as np

    prompts, last_n = [], []
    for d in data:
        targets, weights = d.loss_fn_inputs["target_tokens"], np.asarray(d.loss_fn_inputs["weights"])
        prompts.append(ModelInput.from_ints([*d.model_input.to_ints(), int(np.asarray(targets)[-1])]))
        nonzero = np.flatnonzero(weights)
        last_n.append(len(weights) - int(nonzero[0]) if len(nonzero) else 0)
    rows = reference.compute_logprobs_many(prompts, prompt_logprobs_last_n=last_n).result()
    return [
        Datum(
            d.model_input,
            {
                **d.loss_fn_inputs,
                "ref_logprobs": np.asarray([0.0 if x is None else x for x in lp[1:]], np.float32),
            },
        )
        for d, lp in zip(data, rows, strict=True)
    ]


class DPOEvaluator:
    """Held-out DPO metrics (`test/dpo_loss`, `test/accuracy`, ...) under the current weights."""

    def __init__(self, pairs: list[Datum], *, beta: float, batch_pairs: int, name: str = "test"):
        self.pairs, self.beta, self.batch, self.name = pairs, beta, 2 * batch_pairs, name

    def __call__(self, client) -> dict[str, float]:
        totals: dict[str, float] = {}
        count = 0
        for i in range(0, len(self.pairs), self.batch):
            chunk = self.pairs[i : i + self.batch]
            m = client.forward(chunk, "dpo", {"beta": self.beta}).result().metrics
            n = len(chunk) // 2
            for k in DPO_METRICS:
                totals[k] = totals.get(k, 0.0) + m[k] * n
            count += n
        return {f"{self.name}/{k}": v / count for k, v in totals.items()}


def train(cfg: DPOConfig) -> RunResult:
    from jaxcook.preference.dpo import check_pairs
    from jaxcook.preference.registry import get_preference_builder

    setup = make_setup(cfg.model, max_length=cfg.max_length, batch_size=2 * cfg.batch_size, seed=cfg.seed)
    client = setup.client
    builder = get_preference_builder(cfg.dataset, **{"seed": cfg.seed, **cfg.dataset_options})
    data = builder.build_dpo(setup.renderer, batch_size=cfg.batch_size, max_length=cfg.max_length)
    n_batches = len(data.train)
    if n_batches == 0:
        raise ValueError(f"dataset {cfg.dataset!r} has fewer pairs than batch_size={cfg.batch_size}")
    total = n_batches * cfg.num_epochs
    total = min(total, cfg.max_steps) if cfg.max_steps is not None else total
    # The reference is fixed before any checkpoint is restored: a sampling client of the
    # weights this run starts from (fresh LoRA: the base model, the adapters' B being zero).
    reference = client.save_weights_and_get_sampling_client()
    evaluator = None
    if data.test:
        check_pairs(data.test)
        evaluator = DPOEvaluator(
            with_reference(reference, data.test), beta=cfg.dpo_beta, batch_pairs=cfg.batch_size
        )

    run = TrainingRun(cfg.run, cfg, watched=("train/dpo_loss",))
    try:
        start, _ = run.resume(client)
        loop = {"renderer_name": setup.renderer_name}
        if start == 0 and data.stats:
            run.log({k: float(v) for k, v in data.stats.items()}, 0)
        _loop(cfg, run, client, data.train, reference, evaluator, start, total, n_batches, loop)
        if evaluator is not None:
            run.log(evaluator(client), total)
        final = run.finish(total, client, loop)
    finally:
        run.close()
        reference.close()
    return RunResult(metrics=run.history, final_checkpoint=str(final), log_dir=str(run.log_dir))


def _loop(cfg, run, client, train_data, reference, evaluator, start, total, n_batches, loop_state):
    from jaxcook.logging import ProgressBar
    from jaxcook.preference.dpo import check_pairs

    progress = ProgressBar(total, start_step=start, desc="dpo")
    epoch_set = None
    for step in range(start, total):
        if evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0:
            run.log(evaluator(client), step)
        epoch, i = divmod(step, n_batches)
        if epoch != epoch_set:
            train_data.set_epoch(epoch)
            epoch_set = epoch
        t0 = time.perf_counter()
        batch, data_metrics = batch_with_counts(train_data, i)  # + what truncation/skips did to it
        if not batch:  # every pair of this batch was skipped (ties, bad rows): nothing to learn
            run.log({"progress/skipped_batches": 1.0, **data_metrics}, step)
            continue
        check_pairs(batch)
        batch = with_reference(reference, batch)
        fb = client.forward_backward(batch, "dpo", {"beta": cfg.dpo_beta})
        opt = client.optim_step(cfg.optim.adam_params(step, total))
        out, optim_metrics = fb.result(), opt.result()
        tokens = sum(d.length for d in batch)
        metrics = {f"train/{k}": out.metrics[k] for k in DPO_METRICS}
        metrics.update(
            {
                "train/num_pairs": len(batch) // 2,
                "progress/epoch": epoch,
                "progress/done_frac": (step + 1) / total,
                "tokens/num_tokens": tokens,
                "time/step_s": time.perf_counter() - t0,
                **optim_metrics,
                **data_metrics,
            }
        )
        run.log(metrics, step)
        progress.update(step + 1, loss=metrics["train/dpo_loss"], tokens=tokens)
        run.maybe_save(step + 1, client, {**loop_state, "epoch": epoch, "batch": i + 1})
    progress.close()
