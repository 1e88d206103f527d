"""A fake recipe for the runner and CLI tests: logs a made-up loss curve through jaxcook.logging.

Loss at step s is `loss_scale / (s + 1)`; `start_step` stands in for the step a real recipe would
resume from (its last checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jaxcook.logging import check_log_dir, read_metrics, setup_logging
from jaxcook.run_result import RunResult


@dataclass(frozen=True, kw_only=True)
class LoraConfig:
    rank: int = 32
    alpha: float | None = None


@dataclass(frozen=True, kw_only=True)
class AdamConfig:
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True, kw_only=True)
class Config:
    log_dir: str = field(default="/tmp/jaxcook-fake-recipe", metadata={"help": "where the run writes"})
    log_dir_behavior: Literal["resume", "delete", "raise"] = "resume"
    steps: int = 3
    start_step: int = 0
    loss_scale: float = 1.0
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    lora: LoraConfig = field(default_factory=LoraConfig)
    adam: AdamConfig = field(default_factory=AdamConfig)
    wandb_project: str | None = None


def tiny() -> Config:
    return Config(steps=2, lora=LoraConfig(rank=4))


def main(cfg: Config) -> RunResult:
    check_log_dir(cfg.log_dir, cfg.log_dir_behavior)
    logger = setup_logging(cfg.log_dir, cfg, wandb_project=cfg.wandb_project, start_step=cfg.start_step)
    with logger:
        for step in range(cfg.start_step, cfg.steps):
            logger.log_metrics(
                {"train/loss": cfg.loss_scale / (step + 1), "optim/lr": cfg.adam.learning_rate}, step
            )
    return RunResult(metrics=read_metrics(cfg.log_dir), final_checkpoint=None, log_dir=cfg.log_dir)
