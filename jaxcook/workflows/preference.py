"""DPO: preference pairs trained against a fixed reference policy, with held-out evals and resume.

The reference is the policy the run starts from, as tinker-cookbook has it: a sampling client of
the initial weights (with LoRA and no starting checkpoint, the base: fresh adapters are zero;
from `model.load_checkpoint`, or without LoRA, the starting weights). Reference log-probs come
from one `compute_logprobs_many` per batch (the local backend runs the trainer's forward on the
snapshot, sharing the frozen base: no second copy of it);
the policy's from one jitted forward/backward of the `dpo` loss over chosen and rejected
sequences together (`L = mean_pairs -log sigmoid(beta ((pi_c - ref_c) - (pi_r - ref_r)))`).
Each eval writes `log_dir/reports/eval_<step>.html`: the first `report_pairs` held-out pairs with
their chosen / rejected log-probs under the policy and the reference, and the margin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jaxcook.data.accounting import batch_with_counts
from jaxcook.logging import logtree, trace
from jaxcook.run_result import RunResult
from jaxcook.types import Datum, ModelInput
from jaxcook.workflows.common import ModelOptions, make_setup
from jaxcook.workflows.evals import check_evals, evals_field, run_evaluators, sampling_evaluators
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
    evals: tuple[str, ...] = evals_field()  # sampling evals beside the DPO ones (jaxcook.workflows.evals)
    report_pairs: int = 4  # held-out pairs shown with their log-prob margins in each eval report
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
    """Held-out DPO metrics (`test/dpo_loss`, `test/accuracy`, ...) under the current weights; in an
    active log tree, the first `report_pairs` pairs with their log-probs (needs `tokenizer`)."""

    def __init__(
        self,
        pairs: list[Datum],
        *,
        beta: float,
        batch_pairs: int,
        name: str = "test",
        tokenizer=None,
        report_pairs: int = 0,
    ):
        self.pairs, self.beta, self.batch, self.name = pairs, beta, 2 * batch_pairs, name
        self.tokenizer, self.report_pairs = tokenizer, report_pairs if tokenizer is not None else 0

    def __call__(self, client) -> dict[str, float]:
        totals: dict[str, float] = {}
        count, rows = 0, []
        for i in range(0, len(self.pairs), self.batch):
            chunk = self.pairs[i : i + self.batch]
            out = client.forward(chunk, "dpo", {"beta": self.beta}).result()
            n = len(chunk) // 2
            for k in DPO_METRICS:
                totals[k] = totals.get(k, 0.0) + out.metrics[k] * n
            count += n
            if len(rows) < self.report_pairs and logtree.active():
                rows += self._pair_rows(chunk, out.loss_fn_outputs, len(rows))
        metrics = {f"{self.name}/{k}": v / count for k, v in totals.items()}
        with logtree.scope(f"{self.name}: DPO metrics over {count} held-out pairs", open=True):
            logtree.metrics_table(metrics)
            logtree.table(rows[: self.report_pairs])
        return metrics

    def _pair_rows(self, chunk: list[Datum], outputs: list[dict], first: int) -> list[dict]:
        """Per pair: the weighted completions, sum_t w_t log p_t under policy and reference, and
        the margin beta * ((pi_c - ref_c) - (pi_r - ref_r)) the loss pushes up."""
        import numpy as np

        sides = []
        for d, o in zip(chunk, outputs, strict=True):
            w_T = np.asarray(d.loss_fn_inputs["weights"], np.float64)
            targets = np.asarray(d.loss_fn_inputs["target_tokens"])
            text = self.tokenizer.decode([int(t) for t in targets[w_T > 0]])
            pi = float(np.sum(w_T * np.asarray(o["logprobs"], np.float64)))
            ref = float(np.sum(w_T * np.asarray(d.loss_fn_inputs["ref_logprobs"], np.float64)))
            sides.append((text, pi, ref))
        rows = []
        for k, (c, r) in enumerate(zip(sides[0::2], sides[1::2], strict=True)):
            rows.append(
                {
                    "pair": first + k,
                    "chosen": c[0],
                    "rejected": r[0],
                    "logp_chosen": c[1],
                    "ref_chosen": c[2],
                    "logp_rejected": r[1],
                    "ref_rejected": r[2],
                    "margin": self.beta * ((c[1] - c[2]) - (r[1] - r[2])),
                }
            )
        return rows


def train(cfg: DPOConfig) -> RunResult:
    sampling = check_evals(cfg.evals)  # a bad spec fails here, before the model loads
    setup = make_setup(cfg.model, max_length=cfg.max_length, batch_size=2 * cfg.batch_size, seed=cfg.seed)
    with setup:  # the training client is closed when the run ends, however it ends
        return _train(cfg, setup, sampling)


def _train(cfg: DPOConfig, setup, sampling) -> RunResult:
    from jaxcook.preference.dpo import check_pairs
    from jaxcook.preference.registry import get_preference_builder

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
    evaluators = sampling_evaluators(sampling, setup, data)
    if data.test:
        check_pairs(data.test)
        pairs = with_reference(reference, data.test)
        evaluators.insert(
            0,
            DPOEvaluator(
                pairs,
                beta=cfg.dpo_beta,
                batch_pairs=cfg.batch_size,
                tokenizer=setup.tokenizer,
                report_pairs=cfg.report_pairs,
            ),
        )

    def evaluate(client, step: int) -> dict[str, float]:
        return run_evaluators(evaluators, client, run.log_dir, "dpo", step)

    evaluator = evaluate if evaluators else None
    run = TrainingRun(cfg.run, cfg, watched=("train/dpo_loss",))  # its timing spans -> log_dir/trace.json
    try:
        start, _ = run.resume(client)
        loop = {"renderer_name": setup.renderer_name}
        if start == 0 and data.stats:
            run.log({k: float(v) for k, v in data.stats.items()}, 0)
        _loop(cfg, run, client, data.train, reference, evaluator, start, total, n_batches, loop)
        if evaluator is not None:
            run.log(evaluator(client, total), total)
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
            run.log(evaluator(client, step), step)
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
        with trace.scope("dpo/reference_logprobs", step=step):
            batch = with_reference(reference, batch)
        fb = client.forward_backward(batch, "dpo", {"beta": cfg.dpo_beta})
        opt = client.optim_step(cfg.optim.adam_params(step, total))
        out, optim_metrics = fb.result(), opt.result()
        tokens = sum(d.length for d in batch)
        trace.record("dpo/step", t0, time.perf_counter(), step=step, tokens=tokens)
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
