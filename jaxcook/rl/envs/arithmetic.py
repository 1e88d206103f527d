"""Arithmetic problems (`23 + 45`, `7 * 8 - 3`), generated deterministically from a seed.

The difficulty knobs - `num_digits`, `num_operands`, `operators` - let a run start where the
model is neither always right nor always wrong (RL learns from groups with mixed rewards).
Answers are graded as a bare number ("68", format ok) or, with `answer_format="boxed"`, as
`\\boxed{68}`; `correct` looks at the last number (or box) so "23 + 45 = 68" is correct but
badly formatted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from jaxcook.renderers import Message, Renderer
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.grading import (
    BOXED_INSTRUCTION,
    answers_match,
    extract_boxed,
    extract_last_number,
    extract_plain,
    parse_number,
)
from jaxcook.rl.envs.problem import ProblemEnv, ProblemGroupBuilder, seeded_train_test
from jaxcook.rl.envs.safe_eval import format_number, safe_eval
from jaxcook.rl.types import EnvGroupBuilder, RLDataset

AnswerFormat = Literal["plain", "boxed"]
PLAIN_NUMBER_INSTRUCTION = "Answer with only the number."


@dataclass(frozen=True)
class ArithmeticProblem:
    expression: str  # "23 + 45"
    answer: str  # "68"


def make_problem(
    rng: np.random.Generator, *, num_digits: int = 2, num_operands: int = 2, operators: str = "+"
) -> ArithmeticProblem:
    """Operands have exactly `num_digits` digits (0-9 for one digit); operators drawn from `operators`."""
    low = 0 if num_digits == 1 else 10 ** (num_digits - 1)
    operands = [int(rng.integers(low, 10**num_digits)) for _ in range(num_operands)]
    ops = [operators[int(rng.integers(len(operators)))] for _ in range(num_operands - 1)]
    expression = str(operands[0])
    for op, x in zip(ops, operands[1:]):
        expression += f" {op} {x}"
    return ArithmeticProblem(expression, format_number(safe_eval(expression)))


def few_shot_prefix(answer_format: AnswerFormat) -> list[Message]:
    """One worked example, so a small chat model sees the expected answer shape."""
    answer = "7" if answer_format == "plain" else "\\boxed{7}"
    return [
        {"role": "user", "content": f"What is 3 + 4? {_instruction(answer_format)}"},
        {"role": "assistant", "content": answer},
    ]


def _instruction(answer_format: AnswerFormat) -> str:
    return PLAIN_NUMBER_INSTRUCTION if answer_format == "plain" else BOXED_INSTRUCTION


class ArithmeticEnv(ProblemEnv):
    def __init__(
        self,
        problem: ArithmeticProblem,
        renderer: Renderer,
        *,
        answer_format: AnswerFormat = "plain",
        few_shot: bool = True,
        format_coef: float = 0.1,
    ):
        prefix = few_shot_prefix(answer_format) if few_shot else None
        super().__init__(renderer, convo_prefix=prefix, format_coef=format_coef)
        self.problem = problem
        self.answer_format = answer_format

    def get_question(self) -> str:
        return f"What is {self.problem.expression}? {_instruction(self.answer_format)}"

    def _answer(self, text: str) -> str | None:
        return extract_boxed(text) if self.answer_format == "boxed" else extract_last_number(text)

    def check_format(self, sample_str: str) -> bool:
        if self.answer_format == "boxed":
            return extract_boxed(sample_str) is not None
        return parse_number(extract_plain(sample_str)) is not None

    def check_answer(self, sample_str: str) -> bool:
        return answers_match(self._answer(sample_str), self.problem.answer)

    def get_reference_answer(self) -> str:
        return self.problem.answer


def _arithmetic_group(
    cfg: ArithmeticDatasetBuilder, renderer: Renderer, rng: np.random.Generator, group_size: int
) -> EnvGroupBuilder:
    problem = make_problem(
        rng, num_digits=cfg.num_digits, num_operands=cfg.num_operands, operators=cfg.operators
    )
    env_thunk = partial(
        ArithmeticEnv,
        problem,
        renderer,
        answer_format=cfg.answer_format,
        few_shot=cfg.few_shot,
        format_coef=cfg.format_coef,
    )
    return ProblemGroupBuilder(env_thunk, group_size, "arithmetic")


@dataclass(frozen=True, kw_only=True)
class ArithmeticDatasetBuilder(EnvDatasetBuilder):
    num_digits: int = 2
    num_operands: int = 2
    operators: str = "+"
    answer_format: AnswerFormat = "plain"
    few_shot: bool = True
    format_coef: float = 0.1
    n_batches: int = 100
    n_test_problems: int = 64  # 0 = no test set; test groups have one env each

    def __post_init__(self):
        super().__post_init__()
        if self.num_digits < 1 or self.num_operands < 2:
            raise ValueError(
                f"ArithmeticDatasetBuilder: num_digits >= 1 and num_operands >= 2 needed, "
                f"got {self.num_digits}, {self.num_operands}"
            )
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(
                f"ArithmeticDatasetBuilder.operators must use '+', '-', '*'; got {self.operators!r}"
            )

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        return seeded_train_test(
            partial(_arithmetic_group, self, self.get_renderer()),
            seed=self.seed,
            n_batches=self.n_batches,
            groups_per_batch=self.groups_per_batch,
            group_size=self.group_size,
            n_test_problems=self.n_test_problems,
        )
