"""On-policy distillation: the student samples, teachers score its tokens, reverse KL is the advantage.

    result = train(OnPolicyConfig(datasets=(DistillDatasetConfig(teacher=TeacherConfig(model=...)),)))

This is the RL workflow (`jaxcook.workflows.rl`) on prompt-only envs (reward 0) with one extra
shaper, `TeacherKLShaper`: per sampled token `A_t += -kl_penalty_coef * (log p_student -
log p_teacher)` (optionally discounted; `jaxcook.distill.reverse_kl`), trained with an RL loss
(importance sampling by default), as tinker-cookbook's `distillation/train_on_policy.py` does.

Multi-teacher: each `DistillDatasetConfig` is a prompt source with its own teacher and
`groups_per_batch`; every batch mixes all of them, each datum is scored by its source's teacher
(routed by the group tag `dataset_k`), and `teacher_kl/dataset_k` is logged beside `teacher_kl`.

Held-out evaluation (`test/teacher_kl`, `jaxcook.distill.evaluation`): `n_eval_prompts` prompts of
each source's held-out split, sampled before the first step (logged with step 0) and after the
last (logged with the final step), as RL evaluators, beside any `evals=` sampling evals; each
writes `reports/eval_<step>.html` with the first `report_samples` samples and their teacher KL.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from jaxcook.distill.prompts import PromptSource, dataset_tag, load_prompts, prompt_messages_of
from jaxcook.distill.reverse_kl import reverse_kl_advantages, teacher_kl_metrics
from jaxcook.distill.teacher import Teacher, TeacherConfig
from jaxcook.logging import logtree, trace
from jaxcook.run_result import RunResult
from jaxcook.types import Datum
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.evals import evals_field
from jaxcook.workflows.options import OptimConfig, RunOptions


@dataclass(frozen=True, kw_only=True)
class DistillDatasetConfig:
    """A prompt source (an SFT dataset name or `.jsonl` path; `jaxcook.distill.prompts`) and its teacher."""

    dataset: str = "reasoning_gym_math"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    groups_per_batch: int = 8
    teacher: TeacherConfig = TeacherConfig()


@dataclass(frozen=True, kw_only=True)
class OnPolicyConfig:
    model: ModelOptions = ModelOptions()  # the student
    datasets: tuple[DistillDatasetConfig, ...] = (DistillDatasetConfig(),)
    group_size: int = 4
    max_tokens: int = 128
    temperature: float = 1.0
    kl_penalty_coef: float = 1.0
    kl_discount_factor: float = 0.0
    loss_fn: Literal["importance_sampling", "ppo", "cispo", "dro"] = "importance_sampling"
    num_substeps: int = 1
    mode: Literal["sync", "stream", "async"] = "sync"
    max_steps: int | None = 20
    optim: OptimConfig = OptimConfig(learning_rate=1e-4, lr_schedule="constant")
    n_eval_prompts: int = 32  # held-out prompts per source for test/teacher_kl; 0 = no evaluation
    report_samples: int = 4  # held-out samples shown with their teacher KL in each eval report
    evals: tuple[str, ...] = evals_field()  # sampling evals beside test/teacher_kl
    num_groups_to_log: int = 2
    seed: int = 0
    run: RunOptions = RunOptions(log_dir="runs/distill", save_every=10)

    def __post_init__(self):
        if not self.datasets:
            raise ValueError("OnPolicyConfig.datasets is empty: give at least one prompt source and teacher")


def dataset_index(meta: dict, n_sources: int) -> int:
    """The source of a datum, from its group's `dataset_k` tag (the only one when there is one)."""
    for k in range(n_sources):
        if dataset_tag(k) in meta.get("tags", ()):
            return k
    if n_sources == 1:
        return 0
    raise ValueError(
        f"a datum's group has tags {meta.get('tags')}, none of {[dataset_tag(k) for k in range(n_sources)]}: "
        "with several teachers every group must say which source it came from"
    )


class TeacherKLShaper:
    """`shaper(data, meta) -> (data, metrics)`: adds the teachers' reverse-KL advantages.

    When a teacher reads the student's prompt tokens as its own (same renderer, no system prompt)
    it scores each datum as is (multi-turn datums too); otherwise it re-renders the prompt messages
    of single-turn prompt-only trajectories (`prompt_messages_of`) and scores the completion after
    them. `extra_metrics` are returned once, with the first batch (the initial held-out eval).
    """

    def __init__(
        self,
        teachers: list[Teacher],
        *,
        student_renderer_name: str,
        coef: float,
        discount: float = 0.0,
        extra_metrics: dict[str, float] | None = None,
    ):
        self.teachers, self.student_renderer_name = teachers, student_renderer_name
        self.coef, self.discount = coef, discount
        self.pending = dict(extra_metrics or {})

    def teacher_logprobs(self, data: list[Datum], meta: list[dict]) -> tuple[list[np.ndarray], list[int]]:
        """Per datum, the teacher's log-probs aligned with its targets (0 off the mask), and its source."""
        source_D = [dataset_index(m, len(self.teachers)) for m in meta]
        out: list[np.ndarray | None] = [None] * len(data)
        for k, teacher in enumerate(self.teachers):
            idx = [i for i, s in enumerate(source_D) if s == k]
            if not idx:
                continue
            if not teacher.rerenders(self.student_renderer_name):
                for i, lp in zip(idx, teacher.score([data[i] for i in idx])):
                    out[i] = lp
                continue
            prompts, completions = [], []
            for i in idx:
                traj = meta[i]["trajectory"]
                if len(traj.transitions) != 1:
                    raise ValueError(
                        f"teacher {teacher.name!r} re-renders prompts (renderer {teacher.renderer_name!r} vs "
                        f"the student's {self.student_renderer_name!r}, or a system prompt), which is "
                        f"supported for single-turn trajectories only; this one has "
                        f"{len(traj.transitions)} turns"
                    )
                prompts.append(prompt_messages_of(traj))
                completions.append(traj.transitions[0].ac.tokens)
            for i, completion, lp_c in zip(idx, completions, teacher.score_completions(prompts, completions)):
                mask = np.asarray(data[i].loss_fn_inputs["mask"])
                where = np.flatnonzero(mask > 0)
                if len(where) != len(completion):
                    raise ValueError(
                        f"datum {i}: {len(where)} sampled positions but a {len(completion)}-token completion"
                    )
                aligned = np.zeros(len(mask), np.float32)
                aligned[where] = lp_c
                out[i] = aligned
        return out, source_D

    def __call__(self, data: list[Datum], meta: list[dict]) -> tuple[list[Datum], dict[str, float]]:
        if len(data) != len(meta):
            raise ValueError(f"TeacherKLShaper: {len(data)} datums but {len(meta)} meta entries")
        with trace.scope("distill/teacher_logprobs", datums=len(data)):
            teacher_D, source_D = self.teacher_logprobs(data, meta)
        new_adv_D, sums_D = reverse_kl_advantages(
            [d.loss_fn_inputs["logprobs"] for d in data],
            teacher_D,
            [d.loss_fn_inputs["mask"] for d in data],
            [d.loss_fn_inputs["advantages"] for d in data],
            coef=self.coef,
            discount=self.discount,
        )
        new_data = [
            Datum(d.model_input, {**d.loss_fn_inputs, "advantages": a}) for d, a in zip(data, new_adv_D)
        ]
        metrics, self.pending = {**self.pending, **teacher_kl_metrics(sums_D, source_D)}, {}
        return new_data, metrics


def load_teachers(cfg: OnPolicyConfig, tokenizer) -> list[Teacher]:
    """One `Teacher` per dataset; datasets with equal teacher configs share one loaded model."""
    loaded: dict[TeacherConfig, Teacher] = {}
    teachers = []
    for d in cfg.datasets:
        if d.teacher not in loaded:
            loaded[d.teacher] = Teacher.load(
                d.teacher,
                student_tokenizer=tokenizer,
                student_name=cfg.model.name,
                batch_size=max(x.groups_per_batch for x in cfg.datasets) * cfg.group_size,
            )
        teachers.append(loaded[d.teacher])
    return teachers


def _sources(cfg: OnPolicyConfig) -> list[PromptSource]:
    return [
        PromptSource(
            dataset=d.dataset, dataset_options=dict(d.dataset_options), groups_per_batch=d.groups_per_batch
        )
        for d in cfg.datasets
    ]


def rl_config(cfg: OnPolicyConfig):
    """The RL workflow's config: prompt-only envs, no env test set, no KL against the base."""
    from jaxcook.workflows.rl import RLConfig

    return RLConfig(
        model=cfg.model,
        env="prompts",
        env_options={"sources": tuple(asdict(s) for s in _sources(cfg))},
        groups_per_batch=cfg.datasets[0].groups_per_batch,
        group_size=cfg.group_size,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        loss_fn=cfg.loss_fn,
        num_substeps=cfg.num_substeps,
        kl_penalty_coef=0.0,
        mode=cfg.mode,
        max_steps=cfg.max_steps,
        optim=cfg.optim,
        eval_every=0,
        evals=cfg.evals,
        num_groups_to_log=cfg.num_groups_to_log,
        seed=cfg.seed,
        run=cfg.run,
    )


class TeacherKLEvaluator:
    """`evaluator(client) -> test/teacher_kl...`: the student (the client's current weights) samples
    each source's held-out prompts once, its teacher scores them; in an active log tree, the first
    `report_samples` samples with their KL (nats per token)."""

    def __init__(self, cfg: OnPolicyConfig, renderer, tokenizer, sources_k):
        self.cfg, self.renderer, self.tokenizer, self.sources_k = cfg, renderer, tokenizer, sources_k

    def __call__(self, client) -> dict[str, float]:
        from jaxcook.distill.evaluation import evaluate_teacher_kl

        cfg = self.cfg
        sampler = client.save_weights_and_get_sampling_client()
        try:
            metrics, samples = evaluate_teacher_kl(
                sampler, self.renderer, self.sources_k, max_tokens=cfg.max_tokens, seed=cfg.seed
            )
        finally:
            sampler.close()
        with logtree.scope(f"test/teacher_kl over {len(samples)} held-out samples", open=True):
            logtree.metrics_table(metrics)
            logtree.table(
                [
                    {
                        "source": s.source,
                        "prompt": s.prompt[-1].get("content", "") if s.prompt else "",
                        "completion": self.tokenizer.decode(s.tokens),
                        "tokens": len(s.tokens),
                        "teacher_kl": float((s.student_lp - s.teacher_lp).sum()) / max(len(s.tokens), 1),
                    }
                    for s in samples[: cfg.report_samples]
                ]
            )
        return metrics


def train(cfg: OnPolicyConfig) -> RunResult:
    """Run on-policy distillation; see the module docstring."""
    from jaxcook.config import config_to_dict
    from jaxcook.workflows import rl

    sources = _sources(cfg)
    state: dict[str, Any] = {}

    def make_shaper(ctx) -> TeacherKLShaper:
        teachers = load_teachers(cfg, ctx.setup.tokenizer)
        state["teachers"] = teachers
        ctx.run.log_dir.mkdir(parents=True, exist_ok=True)
        (ctx.run.log_dir / "distill_config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        return TeacherKLShaper(
            teachers,
            student_renderer_name=ctx.setup.renderer_name,
            coef=cfg.kl_penalty_coef,
            discount=cfg.kl_discount_factor,
        )

    def make_evaluator(ctx) -> TeacherKLEvaluator:  # made after the shaper: its teachers score
        held_out = [load_prompts(s, seed=cfg.seed)[1][: cfg.n_eval_prompts] for s in sources]
        sources_k = list(zip(state["teachers"], held_out))
        return TeacherKLEvaluator(cfg, ctx.setup.renderer, ctx.setup.tokenizer, sources_k)

    evaluators = (make_evaluator,) if cfg.n_eval_prompts else ()
    try:
        return rl.train(rl_config(cfg), extra_shapers=(make_shaper,), extra_evaluators=evaluators)
    finally:
        for t in {id(t): t for t in state.get("teachers", [])}.values():
            t.close()
