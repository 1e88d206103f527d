"""Named RL environments (dataset builders) for recipes and the command line."""

from __future__ import annotations

from jaxcook.config import construct
from jaxcook.distill.prompts import PromptDatasetBuilder
from jaxcook.rl.envs.arithmetic import ArithmeticDatasetBuilder
from jaxcook.rl.envs.calculator import CalculatorDatasetBuilder
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.gsm8k import Gsm8kDatasetBuilder
from jaxcook.rl.envs.guess_number import GuessNumberDatasetBuilder
from jaxcook.rl.envs.reasoning_gym_env import ReasoningGymDatasetBuilder

ENVS: dict[str, type[EnvDatasetBuilder]] = {
    "arithmetic": ArithmeticDatasetBuilder,
    "reasoning_gym": ReasoningGymDatasetBuilder,
    "gsm8k": Gsm8kDatasetBuilder,
    "guess_number": GuessNumberDatasetBuilder,
    "calculator": CalculatorDatasetBuilder,
    "prompts": PromptDatasetBuilder,  # prompt-only, reward 0 (on-policy distillation)
}


def get_env_builder(name: str, **options) -> EnvDatasetBuilder:
    """The env dataset builder `name` with `options` as its fields (an unknown one is an error)."""
    if name not in ENVS:
        raise KeyError(f"unknown env {name!r}; valid envs: {sorted(ENVS)}")
    return construct(ENVS[name], options, label=name)
