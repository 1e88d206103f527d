"""DPO (LoRA) of SmolLM2-135M-Instruct on offline preference pairs: correct vs slipped math solutions."""

from __future__ import annotations

from jaxcook.config_aliases import aliases
from jaxcook.lora import LoraConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions
from jaxcook.workflows.preference import DPOConfig, train

Config = DPOConfig
ALIASES = aliases()  # model=, dataset=, lora_rank=, epochs=, ... (jaxcook.config_aliases)


def tiny() -> Config:
    """A 2-layer random model, a few small batches: seconds on a CPU, for smoke tests."""
    return Config(
        model=ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4)),
        dataset_options={"n_per_task": 8, "test_size": 4},
        max_length=256,
        batch_size=2,
        max_steps=3,
        eval_every=2,
        optim=OptimConfig(learning_rate=1e-3),
        run=RunOptions(log_dir="runs/dpo-tiny", save_every=2),
    )


def main(cfg: Config) -> RunResult:
    return train(cfg)
