"""Arithmetic problems (`23 + 45`, `7 * 8 - 3`), generated deterministically from a seed.

The difficulty knobs - `num_digits`, `max_operand`, `num_operands`, `operators`, and `few_shot`
worked examples - let a run start where the model is neither always right nor always wrong (RL
learns from groups with mixed rewards).
Answer formats: "plain" = a bare number ("68"); "equation" = the expression and its result
("23 + 45 = 68", the way small chat models like to answer); "boxed" = `\\boxed{68}`. `correct`
looks at the last number (or box), so "23 + 45 = 68" is correct under "plain" too, but badly
formatted.
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

AnswerFormat = Literal["plain", "equation", "boxed"]
FEW_SHOT_SEED = 20_251_128
INSTRUCTIONS: dict[str, str] = {
    "plain": "Answer with only the number.",
    "equation": "Answer with the equation and its result.",
    "boxed": BOXED_INSTRUCTION,
}


@dataclass(frozen=True)
class ArithmeticProblem:
    expression: str  # "23 + 45"
    answer: str  # "68"


def make_problem(
    rng: np.random.Generator,
    *,
    num_digits: int = 2,
    num_operands: int = 2,
    operators: str = "+",
    max_operand: int | None = None,
) -> ArithmeticProblem:
    """Operands have exactly `num_digits` digits (1-9 for one digit), capped at `max_operand`;
    operators are drawn from `operators`."""
    low = 1 if num_digits == 1 else 10 ** (num_digits - 1)
    high = 10**num_digits - 1 if max_operand is None else min(max_operand, 10**num_digits - 1)
    if high < low:
        raise ValueError(f"max_operand={max_operand} is below the smallest {num_digits}-digit operand {low}")
    operands = [int(rng.integers(low, high + 1)) for _ in range(num_operands)]
    ops = [operators[int(rng.integers(len(operators)))] for _ in range(num_operands - 1)]
    expression = str(operands[0])
    for op, x in zip(ops, operands[1:]):
        expression += f" {op} {x}"
    return ArithmeticProblem(expression, format_number(safe_eval(expression)))


def few_shot_prefix(
    n_examples: int,
    answer_format: AnswerFormat,
    *,
    num_digits: int,
    num_operands: int,
    operators: str,
    max_operand: int | None = None,
) -> list[Message]:
    """`n_examples` worked examples of the same shape as the task, so a small chat model sees the
    expected answer. Drawn from a fixed stream (`FEW_SHOT_SEED`), the same for every problem."""
    rng = np.random.default_rng(FEW_SHOT_SEED)
    messages: list[Message] = []
    for _ in range(n_examples):
        p = make_problem(
            rng,
            num_digits=num_digits,
            num_operands=num_operands,
            operators=operators,
            max_operand=max_operand,
        )
        answer = {
            "plain": p.answer,
            "equation": f"{p.expression} = {p.answer}",
            "boxed": f"\\boxed{{{p.answer}}}",
        }[answer_format]
        messages.append({"role": "user", "content": f"What is {p.expression}? {_instruction(answer_format)}"})
        messages.append({"role": "assistant", "content": answer})
    return messages


def _instruction(answer_format: AnswerFormat) -> str:
    if answer_format not in INSTRUCTIONS:
        raise ValueError(f"unknown answer_format {answer_format!r}; valid: {sorted(INSTRUCTIONS)}")
    return INSTRUCTIONS[answer_format]


class ArithmeticEnv(ProblemEnv):
    def __init__(
        self,
        problem: ArithmeticProblem,
        renderer: Renderer,
        *,
        answer_format: AnswerFormat = "plain",
        convo_prefix: list[Message] | None = None,
        format_coef: float = 0.1,
    ):
        super().__init__(renderer, convo_prefix=convo_prefix, format_coef=format_coef)
        self.problem = problem
        self.answer_format = answer_format

    def get_question(self) -> str:
        return f"What is {self.problem.expression}? {_instruction(self.answer_format)}"

    def _answer(self, text: str) -> str | None:
        return extract_boxed(text) if self.answer_format == "boxed" else extract_last_number(text)

    def check_format(self, sample_str: str) -> bool:
        if self.answer_format == "boxed":
            return extract_boxed(sample_str) is not None
        if self.answer_format == "equation":
            # "<the problem's expression> = <number>", spacing free
            lhs, eq, rhs = extract_plain(sample_str).partition("=")
            same_expr = lhs.replace(" ", "") == self.problem.expression.replace(" ", "")
            return bool(eq) and same_expr and parse_number(rhs) is not None
        return parse_number(extract_plain(sample_str)) is not None

    def check_answer(self, sample_str: str) -> bool:
        return answers_match(self._answer(sample_str), self.problem.answer)

    def get_reference_answer(self) -> str:
        return self.problem.answer


def _arithmetic_group(
    cfg: ArithmeticDatasetBuilder, renderer: Renderer, rng: np.random.Generator, group_size: int
) -> EnvGroupBuilder:
    problem = make_problem(rng, **cfg.knobs)
    prefix = few_shot_prefix(cfg.few_shot, cfg.answer_format, **cfg.knobs)
    env_thunk = partial(
        ArithmeticEnv,
        problem,
        renderer,
        answer_format=cfg.answer_format,
        convo_prefix=prefix,
        format_coef=cfg.format_coef,
    )
    return ProblemGroupBuilder(env_thunk, group_size, "arithmetic")


@dataclass(frozen=True, kw_only=True)
class ArithmeticDatasetBuilder(EnvDatasetBuilder):
    num_digits: int = 2
    max_operand: int | None = None  # cap on operands (e.g. num_digits=1, max_operand=5: 1..5)
    num_operands: int = 2
    operators: str = "+"
    answer_format: AnswerFormat = "equation"
    few_shot: int = 3  # worked examples before the question (0 = none)
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
        make_problem(np.random.default_rng(0), **self.knobs)  # raises on an empty operand range
        if not self.operators or set(self.operators) - set("+-*"):
            raise ValueError(
                f"ArithmeticDatasetBuilder.operators must use '+', '-', '*'; got {self.operators!r}"
            )

    @property
    def knobs(self) -> dict:
        return dict(
            num_digits=self.num_digits,
            num_operands=self.num_operands,
            operators=self.operators,
            max_operand=self.max_operand,
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
