"""Reinforcement learning: sample groups from the current policy, score them, train on them.

Three execution modes (`mode`):
- `sync` (default): each iteration samples a batch of groups with a snapshot of the current
  weights, then trains `num_substeps` optimizer steps on it; exactly on-policy for substep 0.
- `stream`: the same, but training starts on groups as they finish: each substep's groups are
  split into `stream_minibatches` forward/backward calls issued as soon as enough groups are in.
- `async`: sampling runs on in a background thread on the newest available snapshot while the
  trainer trains; a group sampled by a policy more than `max_steps_off_policy` steps old is
  discarded and counted (it is never trained on). See `rl_async.py`.

Per iteration it logs tinker-cookbook's metrics (`env/all/reward/total`, `env/all/correct`,
`env/all/by_group/frac_mixed`, token counts, `optim/kl_sample_train_v1/v2`, `optim/entropy`,
`time/*`) and writes an HTML report of a few sampled groups to `log_dir/reports/`; each eval (the
env's test set, `evals=` sampling evals, a caller's `extra_evaluators`) writes
`reports/eval_<step>.html`, and the run's spans (`rl/step`, `rl/sampling`, `rl/train`, `rl/eval`)
go to `log_dir/trace.json`.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

from jaxcook.logging import trace
from jaxcook.rl import compute_trajectory_metrics, do_batch_rollout
from jaxcook.rl.rollouts import FailFast, MinViableGroup, RetryOnFailure, RolloutConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions, make_setup
from jaxcook.workflows.evals import check_evals, eval_report, evals_field, sampling_evaluators
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.rl_train import groups_to_data, kl_shaper, reference_scorer, train_on_data
from jaxcook.workflows.training_run import TrainingRun


@dataclass(frozen=True, kw_only=True)
class RolloutOptions:
    """What happens when envs raise, rewards are NaN, or a prompt does not fit."""

    on_error: Literal["fail_fast", "retry", "min_viable"] = "retry"
    max_retries: int = 2
    min_successful: int | None = None  # min_viable: None = ceil(0.75 * group_size)
    nan_reward: float | None = None  # None: a NaN reward is a rollout error (dropped/retried/fatal)
    max_context_tokens: int | None = None  # None: the model's context window
    context_overflow_reward: float = 0.0
    max_turns: int | None = None

    def strategy(self):
        if self.on_error == "fail_fast":
            return FailFast()
        if self.on_error == "retry":
            return RetryOnFailure(max_retries=self.max_retries)
        return MinViableGroup(min_successful=self.min_successful, max_retries=self.max_retries)

    def config(self, max_tokens: int, context_window: int) -> RolloutConfig:
        return RolloutConfig(
            max_tokens=max_tokens,
            max_context_tokens=self.max_context_tokens or context_window,
            max_turns=self.max_turns,
            context_overflow_reward=self.context_overflow_reward,
            nan_reward=self.nan_reward,
        )


@dataclass(frozen=True, kw_only=True)
class RLConfig:
    model: ModelOptions = ModelOptions()
    env: str = "arithmetic"  # see jaxcook.rl.envs.registry.ENVS
    env_options: dict[str, Any] = field(default_factory=dict)  # fields of the env's dataset builder
    groups_per_batch: int = 16
    group_size: int = 4
    max_tokens: int = 16
    temperature: float = 1.0
    eval_temperature: float = 1.0
    loss_fn: Literal["importance_sampling", "ppo", "cispo", "dro"] = "importance_sampling"
    loss_fn_config: dict[str, float] | None = None
    num_substeps: int = 1
    microbatch_size: int = 8  # datums per forward/backward call (memory); gradients accumulate
    kl_penalty_coef: float = 0.0  # against the base (adapters off) or the starting weights
    kl_discount_factor: float = 0.0
    remove_constant_reward_groups: bool = False
    mode: Literal["sync", "stream", "async"] = "sync"
    stream_minibatches: int = 2
    max_steps_off_policy: int = 1
    rollout: RolloutOptions = RolloutOptions()
    max_steps: int | None = 30  # iterations; None = every batch of the env dataset
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, lr_schedule="constant")
    eval_every: int = 10  # iterations; 0 = only at the start and the end
    evals: tuple[str, ...] = evals_field()  # sampling evals beside the env's test set
    num_groups_to_log: int = 4  # groups per iteration in the HTML report
    seed: int = 0
    run: RunOptions = RunOptions(log_dir="runs/rl", save_every=10)


@dataclass
class RLContext:
    """What the loops share: the run, the client, datasets, the shapers and the options."""

    cfg: RLConfig
    run: TrainingRun
    setup: Any
    train: Any
    test: Any
    shapers: list
    strategy: Any
    rollout_config: RolloutConfig
    total: int
    evaluators: list = field(default_factory=list)  # evaluator(client) -> metrics, beside the env's

    @property
    def has_evals(self) -> bool:
        return self.test is not None or bool(self.evaluators)

    @property
    def client(self):
        return self.setup.client

    def sampler(self, step: int, *, temperature: float | None = None):
        from jaxcook.completers import LocalTokenCompleter

        seed = zlib.crc32(f"{self.cfg.seed}:{step}".encode())  # same step, same samples (resume)
        client = self.client.save_weights_and_get_sampling_client()
        t = self.cfg.temperature if temperature is None else temperature
        window = self.client.get_info().context_window
        return client, LocalTokenCompleter(client, self.cfg.max_tokens, t, seed=seed, context_window=window)

    def evaluate(self, step: int) -> dict[str, float]:
        """The env's test set and the other evaluators; their samples go to `reports/eval_<step>.html`."""
        with eval_report(self.run.log_dir, "rl", step):
            metrics = self._test_set_metrics(step) if self.test is not None else {}
            for evaluator in self.evaluators:
                metrics.update(evaluator(self.client))
        return metrics

    def _test_set_metrics(self, step: int) -> dict[str, float]:
        from jaxcook.rl.evaluation import evaluate_rl_dataset

        sc, policy = self.sampler(step, temperature=self.cfg.eval_temperature)
        try:
            return asyncio.run(
                evaluate_rl_dataset(self.test, policy, config=self.rollout_config, strategy=self.strategy)
            )
        finally:
            sc.close()

    def train_on_groups(self, groups, step: int) -> dict[str, float]:
        """Advantages, shaping and the optimizer substeps for one iteration's groups."""
        cfg = self.cfg
        data, meta, metrics = groups_to_data(groups, remove_constant=cfg.remove_constant_reward_groups)
        t0 = time.perf_counter()
        for shape in self.shapers:
            data, shaped = shape(data, meta)
            metrics.update(shaped)
        metrics["time/scoring_s"] = time.perf_counter() - t0
        if not data:
            metrics["train/skipped_no_data"] = 1.0
            return metrics
        metrics.update(
            train_on_data(
                self.client,
                data,
                loss_fn=cfg.loss_fn,
                loss_fn_config=cfg.loss_fn_config,
                adam=cfg.optim.adam_params(step, self.total),
                num_substeps=cfg.num_substeps,
                max_rows=cfg.microbatch_size,
            )
        )
        metrics["tokens/num_tokens"] = float(sum(d.length for d in data))
        return metrics

    def report(self, groups, step: int) -> None:
        from jaxcook.logging import ReportItem, write_rollout_report

        tok = self.setup.tokenizer
        items = []
        for g_idx, group in enumerate(groups[: self.cfg.num_groups_to_log]):
            for t_idx, (traj, reward) in enumerate(zip(group.trajectories_G, group.get_total_rewards())):
                messages = []
                for tr in traj.transitions:
                    messages.append({"role": "observation", "content": tok.decode(tr.ob.to_ints())})
                    messages.append({"role": "assistant", "content": tok.decode(tr.ac.tokens)})
                metrics = {k: v for tr in traj.transitions for k, v in tr.metrics.items()}
                items.append(
                    ReportItem(
                        messages=messages,
                        reward=reward,
                        metrics=metrics,
                        title=f"group {g_idx}, sample {t_idx}",
                    )
                )
        if items:
            write_rollout_report(self.run.log_dir, step, items, title=f"RL iteration {step}")


def build_context(cfg: RLConfig, run: TrainingRun, setup, shapers=()) -> RLContext:
    from jaxcook.rl.envs.registry import get_env_builder

    options = {
        "groups_per_batch": cfg.groups_per_batch,
        "group_size": cfg.group_size,
        "seed": cfg.seed,
        **cfg.env_options,
        "renderer": setup.renderer,
    }
    train_ds, test_ds = asyncio.run(get_env_builder(cfg.env, **options)())
    total = len(train_ds) if cfg.max_steps is None else cfg.max_steps
    window = setup.client.get_info().context_window
    return RLContext(
        cfg,
        run,
        setup,
        train_ds,
        test_ds,
        list(shapers),
        cfg.rollout.strategy(),
        cfg.rollout.config(cfg.max_tokens, window),
        total,
    )


def train(cfg: RLConfig, *, extra_shapers=(), extra_evaluators=()) -> RunResult:
    """Run RL. `extra_shapers`: factories `(ctx) -> shaper(data, meta) -> (data, metrics)` applied
    after the KL penalty (on-policy distillation adds the teacher's reverse KL this way).
    `extra_evaluators`: factories `(ctx) -> evaluator(client) -> metrics`, made after the shapers,
    run at every eval (the first and last iteration, and every `eval_every`)."""
    sampling = check_evals(cfg.evals)  # a bad spec fails here, before the model loads
    setup = make_setup(
        cfg.model, max_length=8192, batch_size=cfg.groups_per_batch * cfg.group_size, seed=cfg.seed
    )
    with setup:  # the training client is closed when the run ends, however it ends
        return _train(cfg, setup, sampling, extra_shapers, extra_evaluators)


def _train(cfg: RLConfig, setup, sampling, extra_shapers, extra_evaluators) -> RunResult:
    client = setup.client
    # The KL reference is where this run starts (before any checkpoint is restored): a sampling
    # client of the initial weights (fresh LoRA: the base model, its adapters' B being zero).
    reference = client.save_weights_and_get_sampling_client() if cfg.kl_penalty_coef else None
    run = TrainingRun(cfg.run, cfg, watched=("train/loss",))  # its timing spans -> log_dir/trace.json
    try:
        ctx = build_context(cfg, run, setup)
        if reference is not None:
            ctx.shapers.append(
                kl_shaper(
                    reference_scorer(reference),
                    coef=cfg.kl_penalty_coef,
                    discount=cfg.kl_discount_factor,
                )
            )
        ctx.shapers.extend(make(ctx) for make in extra_shapers)
        ctx.evaluators.extend(make(ctx) for make in extra_evaluators)
        ctx.evaluators.extend(sampling_evaluators(sampling, setup))
        start, _ = run.resume(client)
        if cfg.mode == "async":
            from jaxcook.workflows.rl_async import async_loop

            async_loop(ctx, start)
        else:
            sync_loop(ctx, start)
        if ctx.has_evals:
            run.log(ctx.evaluate(ctx.total), ctx.total)
        final = run.finish(ctx.total, client, {"renderer_name": setup.renderer_name})
    finally:
        run.close()
        if reference is not None:
            reference.close()
    return RunResult(metrics=run.history, final_checkpoint=str(final), log_dir=str(run.log_dir))


def sync_loop(ctx: RLContext, start: int) -> None:
    from jaxcook.logging import ProgressBar

    cfg, run = ctx.cfg, ctx.run
    progress = ProgressBar(ctx.total, start_step=start, desc=f"rl-{cfg.mode}")
    for step in range(start, ctx.total):
        t_iter = time.perf_counter()
        if ctx.has_evals and (step == 0 or (cfg.eval_every and step % cfg.eval_every == 0)):
            run.log(ctx.evaluate(step), step)
        builders = ctx.train.get_batch(step % len(ctx.train))
        sc, policy = ctx.sampler(step)
        t0 = time.perf_counter()
        try:
            if cfg.mode == "stream":
                from jaxcook.workflows.rl_async import stream_iteration

                groups, rollout_metrics, metrics = stream_iteration(ctx, builders, policy, step)
            else:
                with trace.scope("rl/sampling", step=step):
                    batch = asyncio.run(do_batch_rollout(builders, policy, ctx.strategy, ctx.rollout_config))
                groups, rollout_metrics = batch.groups, batch.metrics
                metrics = {"time/sampling_s": time.perf_counter() - t0}
                with trace.scope("rl/train", step=step):
                    metrics.update(ctx.train_on_groups(groups, step))
        finally:
            sc.close()
        metrics.update(rollout_metrics)
        if groups:
            metrics.update(compute_trajectory_metrics(groups))
            ctx.report(groups, step)
        metrics.update(
            {
                "progress/batch": step,
                "progress/done_frac": (step + 1) / ctx.total,
                "optim/lr": cfg.optim.adam_params(step, ctx.total).learning_rate,
                "time/total_s": time.perf_counter() - t_iter,
            }
        )
        run.log(metrics, step)
        trace.record("rl/step", t_iter, time.perf_counter(), step=step, mode=cfg.mode)
        progress.update(step + 1, loss=metrics.get("env/all/reward/total"))
        run.maybe_save(step + 1, ctx.client, {"renderer_name": ctx.setup.renderer_name})
    progress.close()
