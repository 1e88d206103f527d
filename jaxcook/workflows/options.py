"""Config pieces every training workflow shares: where a run logs, and the optimizer schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxcook.core.schedules import lr_multiplier
from jaxcook.types import AdamParams


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Where a run logs and how it checkpoints."""

    log_dir: str = "runs/default"  # a folder, or s3://bucket/run, gs://bucket/run (jaxcook/storage.py)
    if_log_dir_exists: Literal["resume", "delete", "raise"] = "resume"
    save_every: int = 20  # steps; 0 = only the final checkpoint
    keep_checkpoints: int = 3
    wandb_project: str | None = None
    wandb_name: str | None = None
    tensorboard: bool = True


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW with a learning-rate schedule (tinker-cookbook's defaults: betas 0.9/0.95, eps 1e-8)."""

    learning_rate: float = 1e-4
    lr_schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_steps: int = 0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 = off

    def adam_params(self, step: int, total_steps: int) -> AdamParams:
        """Tinker's `AdamParams` for 0-based `step` of a `total_steps` run."""
        lr = self.learning_rate * float(lr_multiplier(self.lr_schedule, step, total_steps, self.warmup_steps))
        return AdamParams(
            learning_rate=lr,
            beta1=self.beta1,
            beta2=self.beta2,
            eps=self.eps,
            weight_decay=self.weight_decay,
            grad_clip_norm=self.grad_clip_norm,
        )
