"""Supervised fine-tuning (LoRA) of SmolLM2-135M-Instruct on offline reasoning-gym math chats."""

from __future__ import annotations

from jaxcook.config_aliases import aliases
from jaxcook.lora import LoraConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.supervised import SupervisedConfig, train

Config = SupervisedConfig
ALIASES = aliases()  # model=, dataset=, lora_rank=, epochs=, ... (jaxcook.config_aliases)


def tiny() -> Config:
    """A 2-layer random model, a few small batches: seconds on a CPU, for smoke tests."""
    return Config(
        model=ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4)),
        dataset_options={"n_per_task": 12, "test_size": 8},
        max_length=128,
        batch_size=4,
        max_steps=4,
        eval_every=2,
        optim=OptimConfig(learning_rate=1e-3),
        run=RunOptions(log_dir="runs/sft-tiny", save_every=2),
    )


def main(cfg: Config) -> RunResult:
    return train(cfg)
