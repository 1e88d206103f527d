"""Single-turn question/answer environments, their groups, and datasets of them.

`ProblemEnv` asks one question and grades one answer:

    reward = format_coef * (format - 1) + correct

where `format` = the response ended cleanly (its stop sequence; or any clean end when
`require_stop_sequence_for_format=False`) and `check_format(text)` holds, and `correct` =
`check_answer(text)` (a bool, or a score in [0, 1] for partial credit). A truncated or badly
formatted answer thus costs `format_coef`; a correct one earns 1. Metrics `format`, `correct`.
"""

from __future__ import annotations

import math
import random
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxcook.renderers import Message, Renderer, get_text_content
from jaxcook.rl.types import (
    Action,
    ActionExtra,
    Env,
    EnvGroupBuilder,
    Observation,
    RLDataset,
    StepResult,
    StopCondition,
)
from jaxcook.types import ModelInput


class ProblemEnv(Env):
    """One question, one answer. Subclasses say what the question is and how to grade."""

    def __init__(
        self,
        renderer: Renderer,
        convo_prefix: list[Message] | None = None,
        format_coef: float = 0.1,
        require_stop_sequence_for_format: bool = True,
    ):
        self.renderer = renderer
        self.convo_prefix = list(convo_prefix or [])
        self.format_coef = format_coef
        self.require_stop_sequence_for_format = require_stop_sequence_for_format

    @abstractmethod
    def get_question(self) -> str: ...

    @abstractmethod
    def check_answer(self, sample_str: str) -> bool | float: ...

    @abstractmethod
    def check_format(self, sample_str: str) -> bool: ...

    @abstractmethod
    def get_reference_answer(self) -> str: ...

    @property
    def stop_condition(self) -> StopCondition:
        return self.renderer.get_stop_sequences()

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        convo = [*self.convo_prefix, {"role": "user", "content": self.get_question()}]
        return self.renderer.build_generation_prompt(convo), self.stop_condition

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        message, termination = self.renderer.parse_response(list(action))
        text = get_text_content(message)
        if self.require_stop_sequence_for_format:
            well_formed = termination.is_stop_sequence
        else:
            well_formed = termination.is_clean
        fmt = bool(well_formed and self.check_format(text))
        correct = float(self.check_answer(text))
        if not (0.0 <= correct <= 1.0) or math.isnan(correct):
            raise ValueError(
                f"{type(self).__name__}.check_answer returned {correct}; expected a value in [0, 1]"
            )
        reward = self.format_coef * (float(fmt) - 1.0) + correct
        return StepResult(
            reward=reward,
            episode_done=True,
            next_observation=ModelInput.empty(),
            next_stop_condition=self.stop_condition,
            metrics={"format": float(fmt), "correct": correct},
            logs={
                "question": self.get_question(),
                "response": text,
                "reference": self.get_reference_answer(),
                "termination": str(termination),
            },
        )


@dataclass(frozen=True)
class ProblemGroupBuilder(EnvGroupBuilder):
    """`num_envs` copies of one problem (the group size). `env_thunk` must be picklable
    (a module-level class or a `functools.partial` of one)."""

    env_thunk: Callable[[], Env]
    num_envs: int
    dataset_name: str = "problems"

    async def make_envs(self) -> Sequence[Env]:
        return [self.env_thunk() for _ in range(self.num_envs)]

    def logging_tags(self) -> list[str]:
        return [self.dataset_name]


class ProblemDataset(RLDataset):
    """Fixed problems in batches of `groups_per_batch` groups (the last batch may be smaller).

    `make_builder(problem)` returns the group builder of one problem. The order is shuffled once
    with `seed` (None keeps the given order).
    """

    def __init__(
        self,
        problems: Sequence[Any],
        make_builder: Callable[[Any], EnvGroupBuilder],
        *,
        groups_per_batch: int,
        seed: int | None = 0,
    ):
        if groups_per_batch < 1:
            raise ValueError(f"groups_per_batch must be >= 1, got {groups_per_batch}")
        if not problems:
            raise ValueError("ProblemDataset needs at least one problem")
        self.problems = list(problems)
        if seed is not None:
            random.Random(seed).shuffle(self.problems)
        self.make_builder = make_builder
        self.groups_per_batch = groups_per_batch

    def __len__(self) -> int:
        return math.ceil(len(self.problems) / self.groups_per_batch)

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range: the dataset has {len(self)} batches")
        chunk = self.problems[index * self.groups_per_batch : (index + 1) * self.groups_per_batch]
        return [self.make_builder(p) for p in chunk]


class SeededDataset(RLDataset):
    """`n_batches` batches of generated problems; batch i depends only on (seed, split, i).

    `make_group(rng, group_size)` draws one problem from `rng` and returns its group builder.
    Splits (0 = train, 1 = test) use independent random streams.
    """

    def __init__(
        self,
        make_group: Callable[[np.random.Generator, int], EnvGroupBuilder],
        *,
        seed: int,
        split: int,
        n_batches: int,
        groups_per_batch: int,
        group_size: int,
    ):
        if n_batches < 1 or groups_per_batch < 1 or group_size < 1:
            raise ValueError(
                f"SeededDataset: n_batches, groups_per_batch and group_size must be >= 1, got "
                f"{n_batches}, {groups_per_batch}, {group_size}"
            )
        self.make_group = make_group
        self.seed, self.split, self.n_batches = seed, split, n_batches
        self.groups_per_batch, self.group_size = groups_per_batch, group_size

    def __len__(self) -> int:
        return self.n_batches

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        if not 0 <= index < self.n_batches:
            raise IndexError(f"batch {index} out of range: the dataset has {self.n_batches} batches")
        rng = np.random.default_rng([self.seed, self.split, index])
        return [self.make_group(rng, self.group_size) for _ in range(self.groups_per_batch)]


def seeded_train_test(
    make_group: Callable[[np.random.Generator, int], EnvGroupBuilder],
    *,
    seed: int,
    n_batches: int,
    groups_per_batch: int,
    group_size: int,
    n_test_problems: int,
) -> tuple[SeededDataset, SeededDataset | None]:
    """Train batches, and a test set of `n_test_problems` single-env groups in one batch (or None)."""
    train = SeededDataset(
        make_group,
        seed=seed,
        split=0,
        n_batches=n_batches,
        groups_per_batch=groups_per_batch,
        group_size=group_size,
    )
    test = None
    if n_test_problems > 0:
        test = SeededDataset(
            make_group, seed=seed, split=1, n_batches=1, groups_per_batch=n_test_problems, group_size=1
        )
    return train, test
