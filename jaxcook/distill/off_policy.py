"""Off-policy distillation: fixed conversations, the teacher's top-K next-token distribution as soft targets.

For every position n of a supervised datum (weight w_n, 0 on prompt tokens) the teacher gives its K
most likely next tokens x[n,k] and their log-probs l[n,k]; renormalised over the K,

    q[n,k] = exp(l[n,k] - logsumexp_k' l[n,k'])          (sums to 1 over the K)
    target_tokens[n,k] = x[n,k],   weights[n,k] = w_n * q[n,k]   (0 wherever w_n = 0)

and the student is trained with `cross_entropy` on the `[N, K]` targets, L = -sum_{n,k}
weights[n,k] log p_student(x[n,k]): the forward KL to the teacher's top-K distribution up to a
constant, per trained token. tinker-cookbook (`distillation/train_off_policy.py`) zeroes the weight
where the original is 0; multiplying by w_n does that and also keeps jaxcook's per-example
normalisation (`reduction="mean"` weights), so with 0/1 weights the two agree exactly.

The teacher scores the datum's own tokens, so it must read the student's format: a teacher with
another renderer or a system prompt is refused (use on-policy distillation for those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxcook.data.dataset import SupervisedDataset
from jaxcook.distill.teacher import Teacher, TeacherConfig
from jaxcook.run_result import RunResult
from jaxcook.types import Datum
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.supervised import SupervisedConfig


def topk_soft_targets(ids_NK, logp_NK, weights_N) -> tuple[np.ndarray, np.ndarray]:
    """(target_tokens int32 `[N, K]`, weights f32 `[N, K]`): see the module docstring."""
    ids_NK, logp_NK = np.asarray(ids_NK), np.asarray(logp_NK, np.float64)
    weights_N = np.asarray(weights_N, np.float64)
    if ids_NK.shape != logp_NK.shape or ids_NK.ndim != 2 or weights_N.shape != ids_NK.shape[:1]:
        raise ValueError(
            f"topk_soft_targets: ids {ids_NK.shape}, logprobs {logp_NK.shape}, weights {weights_N.shape}; "
            "expected [N, K], [N, K], [N]"
        )
    top_N = logp_NK.max(axis=-1, keepdims=True)
    lse_N = top_N + np.log(np.exp(logp_NK - top_N).sum(axis=-1, keepdims=True))
    q_NK = np.exp(logp_NK - lse_N)
    w_NK = np.where(weights_N[:, None] != 0, weights_N[:, None] * q_NK, 0.0)
    return ids_NK.astype(np.int32), w_NK.astype(np.float32)


def soft_target_data(teacher: Teacher, data: Sequence[Datum], k: int) -> list[Datum]:
    """`data` with `target_tokens` / `weights` replaced by the teacher's renormalised top-K."""
    out = []
    for d, (ids_TK, lp_TK) in zip(data, teacher.topk(data, k)):
        targets, weights = topk_soft_targets(ids_TK, lp_TK, d.loss_fn_inputs["weights"])
        out.append(Datum(d.model_input, {"target_tokens": targets, "weights": weights}))
    return out


class TopKTargetsDataset(SupervisedDataset):
    """A supervised dataset whose batches carry the teacher's top-K soft targets (computed per batch)."""

    def __init__(self, inner: SupervisedDataset, teacher: Teacher, k: int):
        self.inner, self.teacher, self.k = inner, teacher, k
        self.batch_size = inner.batch_size

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def get_batch(self, i: int) -> list[Datum]:
        return soft_target_data(self.teacher, self.inner.get_batch(i), self.k)

    def stats(self) -> dict[str, int]:
        return self.inner.stats()


@dataclass(frozen=True, kw_only=True)
class OffPolicyConfig(SupervisedConfig):
    """The supervised workflow's options (the student is `model`; held-out NLL is of the dataset's
    own answers), plus the teacher and the number of soft targets per position."""

    teacher: TeacherConfig = TeacherConfig()
    topk: int = 20
    optim: OptimConfig = OptimConfig(learning_rate=5e-4, lr_schedule="constant")
    run: RunOptions = RunOptions(log_dir="runs/distill-off-policy")


def train(cfg: OffPolicyConfig) -> RunResult:
    """Off-policy top-K distillation: the supervised workflow (checkpoints, resume, held-out NLL of
    the dataset's own answers) on batches whose targets are the teacher's top-K (`train/nll` is
    then the soft cross-entropy per unit of weight)."""
    from jaxcook.data.builders import SupervisedData
    from jaxcook.workflows.common import renderer_name_for
    from jaxcook.workflows.supervised import build_sft_data
    from jaxcook.workflows.supervised import train as supervised_train

    if cfg.topk < 1:
        raise ValueError(f"OffPolicyConfig.topk must be >= 1, got {cfg.topk}")
    student_format, teacher_format = renderer_name_for(cfg.model), renderer_name_for(cfg.teacher.model)
    if cfg.teacher.system_prompt is not None or teacher_format != student_format:
        raise ValueError(
            f"off-policy distillation scores the student's tokens as they are, but the teacher reads "
            f"another format (renderer {teacher_format!r} vs the student's {student_format!r}, or a "
            "system prompt): use on-policy distillation for it"
        )
    teachers: list[Teacher] = []

    def build(sup_cfg, setup):
        teacher = Teacher.load(
            cfg.teacher,
            student_tokenizer=setup.tokenizer,
            student_name=cfg.model.name,
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
        )
        teachers.append(teacher)
        data = build_sft_data(sup_cfg, setup)
        return SupervisedData(TopKTargetsDataset(data.train, teacher, cfg.topk), data.test, data.stats)

    try:
        return supervised_train(cfg, build_data=build)
    finally:
        for teacher in teachers:
            teacher.close()
