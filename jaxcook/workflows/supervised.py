"""Supervised fine-tuning: epochs of cross-entropy steps with evals, checkpoints and exact resume.

Step s trains on batch `s mod n` of epoch `s // n` (a deterministic order from the data seed),
so a resumed run continues with exactly the batch the interrupted one would have taken next.
Evals run before the step on the pre-step weights (as tinker-cookbook does) and once at the end.
Up to two steps are in flight: step s+1 is batched and submitted while step s computes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxcook.data.accounting import batch_with_counts
from jaxcook.data.metrics import compute_mean_nll
from jaxcook.logging import trace
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions, make_setup
from jaxcook.workflows.evals import check_evals, evals_field, run_evaluators, sampling_evaluators
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.training_run import TrainingRun


@dataclass(frozen=True, kw_only=True)
class SupervisedConfig:
    model: ModelOptions = ModelOptions()
    dataset: str = "reasoning_gym_math"  # registry name, .jsonl path or HF dataset name
    dataset_options: dict[str, Any] = field(default_factory=dict)  # fields of the dataset's builder
    train_on_what: str | None = None  # None = the dataset's default
    max_length: int = 256
    batch_size: int = 8
    num_epochs: int = 1
    max_steps: int | None = 60  # None = every batch of every epoch
    optim: OptimConfig = OptimConfig(learning_rate=5e-4)
    eval_every: int = 20  # steps; 0 = only at the end
    eval_batch_size: int = 16
    evals: tuple[str, ...] = evals_field()  # sampling evals beside the NLL (jaxcook.workflows.evals)
    seed: int = 0
    run: RunOptions = RunOptions(log_dir="runs/sft")


def build_sft_data(cfg: SupervisedConfig, setup):
    from jaxcook.data.registry import get_sft_builder

    builder = get_sft_builder(cfg.dataset, **{"seed": cfg.seed, **cfg.dataset_options})
    return builder.build(
        setup.renderer, batch_size=cfg.batch_size, max_length=cfg.max_length, train_on_what=cfg.train_on_what
    )


def train(cfg: SupervisedConfig, *, build_data=build_sft_data, extra_evaluators=()) -> RunResult:
    """Run SFT. `build_data(cfg, setup) -> SupervisedData` (train dataset, test datums, stats);
    `extra_evaluators`: factories `(setup, data) -> evaluator`, where `evaluator(client) -> metrics`
    runs at each eval beside the held-out NLL."""
    sampling = check_evals(cfg.evals)  # a bad spec fails here, before the model loads
    setup = make_setup(
        cfg.model,
        max_length=cfg.max_length,
        batch_size=max(cfg.batch_size, cfg.eval_batch_size),
        seed=cfg.seed,
    )
    with setup:  # the training client is closed when the run ends, however it ends
        return _train(cfg, setup, sampling, build_data, extra_evaluators)


def _train(cfg: SupervisedConfig, setup, sampling, build_data, extra_evaluators) -> RunResult:
    from jaxcook.eval.nll import NLLEvaluator

    client = setup.client
    data = build_data(cfg, setup)
    n_batches = len(data.train)
    if n_batches == 0:
        raise ValueError(f"dataset {cfg.dataset!r} has fewer examples than batch_size={cfg.batch_size}")
    total = n_batches * cfg.num_epochs
    total = min(total, cfg.max_steps) if cfg.max_steps is not None else total
    evaluators = (
        [NLLEvaluator(data.test, setup.tokenizer, batch_size=cfg.eval_batch_size)] if data.test else []
    )
    evaluators += [make(setup, data) for make in extra_evaluators]
    evaluators += sampling_evaluators(sampling, setup, data)

    def evaluate(client, step: int) -> dict[str, float]:  # samples and scores also go to an HTML log tree
        return run_evaluators(evaluators, client, run.log_dir, "sft", step)

    evaluator = evaluate if evaluators else None

    run = TrainingRun(cfg.run, cfg)  # its timing spans -> log_dir/trace.json
    try:
        start, _ = run.resume(client)
        loop = {"renderer_name": setup.renderer_name}
        if start == 0 and data.stats:
            run.log({k: float(v) for k, v in data.stats.items()}, 0)
        _loop(cfg, run, client, data.train, evaluator, start, total, n_batches, loop)
        if evaluator is not None:
            run.log(evaluator(client, total), total)
        final = run.finish(total, client, loop)
    finally:
        run.close()
    return RunResult(metrics=run.history, final_checkpoint=str(final), log_dir=str(run.log_dir))


def _loop(cfg, run, client, train_data, evaluator, start, total, n_batches, loop_state):
    from jaxcook.logging import ProgressBar

    progress = ProgressBar(total, start_step=start, desc="sft")
    in_flight: deque = deque()
    epoch_set = None

    def finish_oldest():
        step, batch, data_metrics, fb, opt, t0 = in_flight.popleft()
        if not batch:  # the data policy skipped every example of this batch: no step taken
            run.log({"progress/skipped_batches": 1.0, **data_metrics}, step)
            return
        out, optim_metrics = fb.result(), opt.result()
        logprobs = [o["logprobs"] for o in out.loss_fn_outputs]
        weights = [d.loss_fn_inputs["weights"] for d in batch]
        tokens = sum(d.length for d in batch)
        elapsed = time.perf_counter() - t0
        trace.record("sft/step", t0, t0 + elapsed, step=step, tokens=tokens)
        metrics = {
            "train/loss": out.metrics["loss:sum"],
            "train/nll": compute_mean_nll(logprobs, weights),
            "progress/epoch": step // n_batches,
            "progress/done_frac": (step + 1) / total,
            "tokens/num_sequences": len(batch),
            "tokens/num_tokens": tokens,
            "tokens/num_loss_tokens": int(sum(np.count_nonzero(w) for w in weights)),
            "time/step_s": elapsed,
            **optim_metrics,
            **data_metrics,
        }
        run.log(metrics, step)
        progress.update(step + 1, loss=metrics["train/nll"], tokens=tokens)

    for step in range(start, total):
        if evaluator is not None and cfg.eval_every and step % cfg.eval_every == 0:
            while in_flight:
                finish_oldest()
            run.log(evaluator(client, step), step)
        epoch, i = divmod(step, n_batches)
        if epoch != epoch_set:
            train_data.set_epoch(epoch)
            epoch_set = epoch
        batch, data_metrics = batch_with_counts(train_data, i)  # + what truncation/skips did to it
        t0 = time.perf_counter()
        fb = client.forward_backward(batch, "cross_entropy") if batch else None
        opt = client.optim_step(cfg.optim.adam_params(step, total)) if batch else None
        in_flight.append((step, batch, data_metrics, fb, opt, t0))
        while len(in_flight) > 1:
            finish_oldest()
        if run.should_save(step + 1):  # periodic, or a SIGTERM / SIGINT asked to stop
            while in_flight:  # log (and check) every step before saving its state
                finish_oldest()
            run.maybe_save(step + 1, client, {**loop_state, "epoch": epoch, "batch": i + 1})
    while in_flight:
        finish_oldest()
    progress.close()
