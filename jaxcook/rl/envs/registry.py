"""RL environments (dataset builders) for recipes and the command line: by name, import path or object.

    get_env_builder("arithmetic", group_size=4)                 # a name in ENVS
    get_env_builder("mypkg.envs:MyEnvBuilder", group_size=4)    # an import path
    get_env_builder(MyEnvBuilder, group_size=4)                 # a class (notebooks, configs)
    get_env_builder(MyEnvBuilder(difficulty=3), group_size=4)   # a configured builder, kept as is

A builder class gets the options as its fields (an unknown one is an error listing the valid ones);
a configured dataclass builder has the options it has fields for replaced (the run's group size,
seed and renderer), others are left to it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

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


# What a config's `env` field holds: a name in ENVS, "package.module:Builder", a class or a builder.
EnvSpec = str | type | Callable[..., Any]


class EnvSpecError(ValueError):
    """An `env` that names no registered env, cannot be imported, or is not a dataset builder."""


def get_env_builder(env: EnvSpec, **options) -> EnvDatasetBuilder:
    """The env dataset builder for `env` (see the module docstring) with `options` applied."""
    if isinstance(env, str):
        if env in ENVS:
            return construct(ENVS[env], options, label=env)
        env = import_env(env)
    if isinstance(env, type):
        if dataclasses.is_dataclass(env):
            return construct(env, options, label=env.__qualname__)
        return env(**options)
    if not callable(env):
        raise EnvSpecError(f"env {env!r} is not a dataset builder (a callable returning (train, test))")
    if dataclasses.is_dataclass(env):
        names = {f.name for f in dataclasses.fields(env) if f.init}
        return dataclasses.replace(env, **{k: v for k, v in options.items() if k in names})
    return env


def import_env(path: str):
    """'package.module:Builder' -> the object, or EnvSpecError saying why not."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise EnvSpecError(
            f"unknown env {path!r}; registered envs: {', '.join(sorted(ENVS))}, "
            "or give an import path 'package.module:Builder'"
        )
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise EnvSpecError(f"env {path!r}: cannot import {module_name} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EnvSpecError(f"env {path!r}: module {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
