"""Procedural tasks from `reasoning-gym` (offline, with their own answer scorers).

`reasoning_gym.create_dataset(name, size=..., seed=...)` yields items `{"question", "answer",
"metadata"}`; the dataset's `score_answer(answer, item)` returns a score in [0, 1]. The model's
answer is its last `\\boxed{}` (or, with `answer_format="plain"`, the whole stripped response).
`correct` = score (with `partial_credit`) or score == 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from jaxcook.renderers import Message, Renderer
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.grading import BOXED_INSTRUCTION, PLAIN_INSTRUCTION, extract_boxed, extract_plain
from jaxcook.rl.envs.problem import ProblemDataset, ProblemEnv, ProblemGroupBuilder
from jaxcook.rl.types import EnvGroupBuilder, RLDataset


class ReasoningGymEnv(ProblemEnv):
    def __init__(
        self,
        item: dict[str, Any],
        scorer: Any,  # the reasoning_gym dataset the item came from (has score_answer)
        renderer: Renderer,
        *,
        answer_format: Literal["boxed", "plain"] = "boxed",
        partial_credit: bool = False,
        convo_prefix: list[Message] | None = None,
        format_coef: float = 0.1,
    ):
        super().__init__(renderer, convo_prefix=convo_prefix, format_coef=format_coef)
        self.item, self.scorer = item, scorer
        self.answer_format, self.partial_credit = answer_format, partial_credit

    def get_question(self) -> str:
        instruction = BOXED_INSTRUCTION if self.answer_format == "boxed" else PLAIN_INSTRUCTION
        return f"{self.item['question'].rstrip()}\n\n{instruction}"

    def _answer(self, text: str) -> str | None:
        if self.answer_format == "boxed":
            return extract_boxed(text)
        return extract_plain(text) or None

    def check_format(self, sample_str: str) -> bool:
        return self._answer(sample_str) is not None

    def check_answer(self, sample_str: str) -> float:
        answer = self._answer(sample_str)
        score = float(self.scorer.score_answer(answer, self.item)) if answer is not None else 0.0
        return score if self.partial_credit else float(score >= 1.0)

    def get_reference_answer(self) -> str:
        return str(self.item["answer"])


def _group(
    cfg: ReasoningGymDatasetBuilder, renderer: Renderer, scorer: Any, group_size: int, item: dict
) -> EnvGroupBuilder:
    env_thunk = partial(
        ReasoningGymEnv,
        item,
        scorer,
        renderer,
        answer_format=cfg.answer_format,
        partial_credit=cfg.partial_credit,
        format_coef=cfg.format_coef,
    )
    return ProblemGroupBuilder(env_thunk, group_size, cfg.dataset_name)


@dataclass(frozen=True, kw_only=True)
class ReasoningGymDatasetBuilder(EnvDatasetBuilder):
    dataset_name: str = "basic_arithmetic"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to create_dataset
    n_train_problems: int = 2048
    n_test_problems: int = 128
    answer_format: Literal["boxed", "plain"] = "boxed"
    partial_credit: bool = False
    format_coef: float = 0.1

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        import reasoning_gym

        renderer = self.get_renderer()
        try:
            train_ds = reasoning_gym.create_dataset(
                self.dataset_name, size=self.n_train_problems, seed=self.seed, **self.dataset_kwargs
            )
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(
                f"ReasoningGymDatasetBuilder: cannot create reasoning_gym dataset {self.dataset_name!r} "
                f"with {self.dataset_kwargs}: {e}"
            ) from e
        train = ProblemDataset(
            [train_ds[i] for i in range(len(train_ds))],
            partial(_group, self, renderer, train_ds, self.group_size),
            groups_per_batch=self.groups_per_batch,
            seed=self.seed,
        )
        test = None
        if self.n_test_problems > 0:
            # A different generator seed gives problems the train set (almost surely) lacks.
            test_ds = reasoning_gym.create_dataset(
                self.dataset_name, size=self.n_test_problems, seed=self.seed + 10_007, **self.dataset_kwargs
            )
            test = ProblemDataset(
                [test_ds[i] for i in range(len(test_ds))],
                partial(_group, self, renderer, test_ds, 1),
                groups_per_batch=self.n_test_problems,
                seed=None,
            )
        return train, test
