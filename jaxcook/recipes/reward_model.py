"""Reward (preference) model: SmolLM2-135M-Instruct (LoRA) learns to say which of two answers is right."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jaxcook.config_aliases import aliases
from jaxcook.lora import LoraConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.supervised import SupervisedConfig, train


@dataclass(frozen=True, kw_only=True)
class Config(SupervisedConfig):
    dataset: str = "reasoning_gym_math"  # a preference dataset (see jaxcook.preference.registry)
    # Half the rejected answers slip in their arithmetic, half answer another problem (off topic);
    # held-out accuracy is reported for each kind.
    dataset_options: dict[str, Any] = field(default_factory=lambda: {"rejected": "mixed"})
    swap: Literal["random", "both"] = "both"  # A/B order of the training comparisons
    max_length: int = 384
    optim: OptimConfig = OptimConfig(learning_rate=3e-4)
    run: RunOptions = RunOptions(log_dir="runs/reward_model")


ALIASES = aliases()  # jaxcook.config_aliases


def tiny() -> Config:
    return Config(
        model=ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4)),
        dataset_options={"n_per_task": 8, "test_size": 4, "rejected": "mixed"},
        batch_size=4,
        max_steps=3,
        eval_every=2,
        optim=OptimConfig(learning_rate=1e-3),
        run=RunOptions(log_dir="runs/reward_model-tiny", save_every=2),
    )


def _build(cfg: Config, setup):
    from jaxcook.preference.registry import get_preference_builder
    from jaxcook.preference.reward_model import ComparisonRenderer

    builder = get_preference_builder(cfg.dataset, **{"seed": cfg.seed, **cfg.dataset_options})
    return builder.build_reward_model(
        ComparisonRenderer(setup.renderer),
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        swap=cfg.swap,
    )


def _accuracy(setup, data):
    from jaxcook.preference.reward_model import ComparisonRenderer
    from jaxcook.preference.rm_eval import LabelAccuracyEvaluator

    ids = ComparisonRenderer(setup.renderer).label_token_ids
    return LabelAccuracyEvaluator(data.test, ids, groups=data.test_groups)


def main(cfg: Config) -> RunResult:
    return train(cfg, build_data=_build, extra_evaluators=(_accuracy,))
