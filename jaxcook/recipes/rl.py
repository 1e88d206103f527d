"""RL (LoRA, importance sampling) of SmolLM2-135M-Instruct on generated two-digit addition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jaxcook.config_aliases import aliases
from jaxcook.lora import LoraConfig
from jaxcook.rl.envs.registry import EnvSpec
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.rl import RLConfig, train


@dataclass(frozen=True, kw_only=True)
class Config(RLConfig):
    env: EnvSpec = "arithmetic"
    # two-digit a + b, answered as an equation after 3 worked examples; 128 held-out problems
    env_options: dict[str, Any] = field(default_factory=lambda: {"n_test_problems": 128})
    groups_per_batch: int = 8
    group_size: int = 4
    max_tokens: int = 16
    max_steps: int | None = 30
    eval_every: int = 10
    optim: OptimConfig = OptimConfig(learning_rate=2e-4, lr_schedule="constant")
    run: RunOptions = RunOptions(log_dir="runs/rl", save_every=10)


ALIASES = aliases(
    dataset=None, epochs=None, batch_size=None, max_length=None, batches="max_steps"
)  # jaxcook.config_aliases


def tiny() -> Config:
    """A 2-layer random model, 3 iterations of 2 groups x 2 samples: seconds on a CPU."""
    return Config(
        model=ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4)),
        env_options={"n_test_problems": 4, "few_shot": 1},
        groups_per_batch=2,
        group_size=2,
        max_tokens=8,
        max_steps=3,
        eval_every=2,
        optim=OptimConfig(learning_rate=1e-3, lr_schedule="constant"),
        run=RunOptions(log_dir="runs/rl-tiny", save_every=2),
    )


def main(cfg: Config) -> RunResult:
    return train(cfg)
