"""GSM8K grade-school math, graded by the last `\\boxed{}` against the number after `####`.

Rows have `question` and `answer`, where `answer` is a worked solution ending in `#### 42`.
They load from a local JSONL file (`train_path` / `test_path`) or, when none is given, from the
Hugging Face hub (`openai/gsm8k`, config `main`) through `datasets` (needs hub access).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from jaxcook.renderers import Message, Renderer
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.grading import BOXED_INSTRUCTION, extract_boxed, grade_boxed, normalize_answer
from jaxcook.rl.envs.problem import ProblemDataset, ProblemEnv, ProblemGroupBuilder
from jaxcook.rl.types import EnvGroupBuilder, RLDataset

INSTRUCTION = "Provide a numerical answer without units. " + BOXED_INSTRUCTION


def extract_gsm8k_answer(answer: str, where: str = "answer") -> str:
    """The final answer of a GSM8K solution: what follows `####`, commas removed."""
    if "####" not in answer:
        raise ValueError(f"{where}: GSM8K answer has no '####' final-answer marker: {answer[-80:]!r}")
    return normalize_answer(answer.rsplit("####", 1)[1])


def few_shot_prefix() -> list[Message]:
    """A made-up worked example showing the expected `\\boxed{}` answer."""
    return [
        {
            "role": "user",
            "content": f"Sam has 3 boxes with 4 pens in each box. He gives away 5 pens. "
            f"How many pens does he have left? {INSTRUCTION}",
        },
        {
            "role": "assistant",
            "content": "Sam has 3 * 4 = 12 pens. After giving away 5 he has 12 - 5 = 7. \\boxed{7}",
        },
    ]


class Gsm8kEnv(ProblemEnv):
    def __init__(
        self,
        question: str,
        answer: str,
        renderer: Renderer,
        *,
        few_shot: bool = False,
        format_coef: float = 0.1,
    ):
        super().__init__(
            renderer, convo_prefix=few_shot_prefix() if few_shot else None, format_coef=format_coef
        )
        self.question, self.answer = question, answer

    def get_question(self) -> str:
        return f"{self.question} {INSTRUCTION}"

    def check_format(self, sample_str: str) -> bool:
        return extract_boxed(sample_str) is not None

    def check_answer(self, sample_str: str) -> bool:
        return grade_boxed(sample_str, self.answer)

    def get_reference_answer(self) -> str:
        return self.answer


def load_gsm8k_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Rows `{"question", "answer"}` (answer = the final number) from a JSONL file."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON: {e}") from e
            missing = [k for k in ("question", "answer") if not isinstance(obj.get(k), str)]
            if missing:
                raise ValueError(f"{where}: missing string field(s) {missing}")
            rows.append({"question": obj["question"], "answer": extract_gsm8k_answer(obj["answer"], where)})
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def load_gsm8k_hub(split: str, hub_name: str = "openai/gsm8k") -> list[dict[str, str]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(hub_name, "main", split=split)
    except Exception as e:  # noqa: BLE001 - any hub/network failure gets the same advice
        raise RuntimeError(
            f"could not load {hub_name} ({split}) from the Hugging Face hub: {e}. Pass train_path/test_path "
            "to a local JSONL file with 'question' and 'answer' ('... #### N') fields instead."
        ) from e
    return [
        {"question": r["question"], "answer": extract_gsm8k_answer(r["answer"], f"{hub_name}[{split}][{i}]")}
        for i, r in enumerate(ds)
    ]


def _group(
    cfg: Gsm8kDatasetBuilder, renderer: Renderer, group_size: int, row: dict[str, Any]
) -> EnvGroupBuilder:
    env_thunk = partial(
        Gsm8kEnv, row["question"], row["answer"], renderer, few_shot=cfg.few_shot, format_coef=cfg.format_coef
    )
    return ProblemGroupBuilder(env_thunk, group_size, "gsm8k")


@dataclass(frozen=True, kw_only=True)
class Gsm8kDatasetBuilder(EnvDatasetBuilder):
    train_path: str | None = None  # local JSONL; None = the hub
    test_path: str | None = None  # local JSONL; None = the hub's test split unless train_path is local
    hub_name: str = "openai/gsm8k"
    n_test_problems: int | None = None  # None = all
    few_shot: bool = True
    format_coef: float = 0.1

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        renderer = self.get_renderer()
        train_rows = (
            load_gsm8k_jsonl(self.train_path) if self.train_path else load_gsm8k_hub("train", self.hub_name)
        )
        if self.test_path:
            test_rows = load_gsm8k_jsonl(self.test_path)
        elif self.train_path:
            test_rows = []  # a local train file does not imply hub access
        else:
            test_rows = load_gsm8k_hub("test", self.hub_name)
        test_rows = test_rows[: self.n_test_problems] if self.n_test_problems is not None else test_rows
        train = ProblemDataset(
            train_rows,
            partial(_group, self, renderer, self.group_size),
            groups_per_batch=self.groups_per_batch,
            seed=self.seed,
        )
        test = None
        if test_rows:
            test = ProblemDataset(
                test_rows, partial(_group, self, renderer, 1), groups_per_batch=len(test_rows), seed=None
            )
        return train, test
