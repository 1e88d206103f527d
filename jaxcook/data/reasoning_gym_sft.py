"""The embedded default SFT data: worked math problems from `reasoning-gym`, made offline from a seed.

Each example is one exchange in the format the RL environments grade (`ReasoningGymEnv`):

    user:      {reasoning-gym question}\\n\\nPut your final answer within \\boxed{}.
    assistant: {worked solution, one step per line}\\n\\nThe answer is \\boxed{N}.

Tasks (each with a worked solution, checked against the task's own answer):
- `chain_sum` (2-4 terms of 1-3 digits): the running total, one operation per line;
- `leg_counting` (2-4 kinds of animal): legs per kind, then their sum;
- `gsm_symbolic` (GSM8K-test-derived word problems): the task's own chain of thought
  (`metadata["answer_cot"]`) with its `#### N` line replaced by the boxed answer.

`ReasoningGymSFTBuilder` keeps items whose question + solution fit `max_chars` (600 by default:
at most ~245 tokens with SmolLM2's chatml template, so nothing is truncated at max_length 256).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxcook.data.builders import InMemoryChatBuilder
from jaxcook.data.sources import Record
from jaxcook.renderers import Message

# Same text as `jaxcook.rl.envs.grading.BOXED_INSTRUCTION` (a test keeps them equal).
BOXED_INSTRUCTION = "Put your final answer within \\boxed{}."

# reasoning-gym generator settings per task: short enough for max_length 256 with SmolLM2's prompt.
TASK_KWARGS: dict[str, dict[str, Any]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 3},
    "leg_counting": {"min_animals": 2, "max_animals": 4, "min_instances": 1, "max_instances": 10},
    "gsm_symbolic": {},
}


def _chain_sum_steps(item: dict) -> list[str]:
    terms = item["metadata"]["expression"].split()
    total = int(terms[0])
    lines = []
    for op, x in zip(terms[1::2], terms[2::2]):
        if op not in ("+", "-"):
            raise ValueError(f"chain_sum: unexpected operator {op!r} in {item['metadata']['expression']!r}")
        new = total + int(x) if op == "+" else total - int(x)
        lines.append(f"{total} {op} {x} = {new}")
        total = new
    if not lines:
        lines.append(f"{total}")
    _check(total, item)
    return lines


def _leg_counting_steps(item: dict) -> list[str]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    legs = [(name, count, count * ANIMALS[name]) for name, count in item["metadata"]["animals"].items()]
    lines = [f"{name}: {count} * {ANIMALS[name]} = {product}" for name, count, product in legs]
    total = sum(p for _, _, p in legs)
    lines.append(f"Total: {' + '.join(str(p) for _, _, p in legs)} = {total}")
    _check(total, item)
    return lines


def _gsm_symbolic_steps(item: dict) -> list[str]:
    lines = [ln for ln in item["metadata"]["answer_cot"].strip().splitlines() if ln.strip()]
    if lines and lines[-1].startswith("####"):
        lines = lines[:-1]
    return lines


def _check(total: int, item: dict) -> None:
    if str(total) != str(item["answer"]).strip():
        raise ValueError(
            f"worked solution gives {total}, reasoning-gym says {item['answer']!r}: {item['question']!r}"
        )


WORKED_SOLUTIONS: dict[str, Callable[[dict], list[str]]] = {
    "chain_sum": _chain_sum_steps,
    "leg_counting": _leg_counting_steps,
    "gsm_symbolic": _gsm_symbolic_steps,
}


def conversation_from_item(task: str, item: dict) -> list[Message]:
    """A reasoning-gym item as a user question and a worked, boxed assistant answer."""
    steps = "\n".join(WORKED_SOLUTIONS[task](item))
    return [
        {"role": "user", "content": f"{item['question'].rstrip()}\n\n{BOXED_INSTRUCTION}"},
        {"role": "assistant", "content": f"{steps}\n\nThe answer is \\boxed{{{item['answer']}}}."},
    ]


def task_seed(seed: int, k: int) -> int:
    """Generator seed of the k-th task: independent streams per task from one user seed."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def reasoning_gym_records(
    tasks: tuple[str, ...], n_per_task: int, seed: int, *, max_chars: int | None = None
) -> list[Record]:
    """`n_per_task` conversations of each task; `where` is `reasoning_gym/{task}[{i}]`.

    With `max_chars`, items whose question + solution exceed that many characters are passed over
    (the next items of the same generator are taken instead), so examples fit a token budget.
    """
    import reasoning_gym

    unknown = [t for t in tasks if t not in WORKED_SOLUTIONS]
    if unknown:
        raise ValueError(
            f"reasoning-gym SFT tasks {unknown} have no worked solution; known: {sorted(WORKED_SOLUTIONS)}"
        )
    records = []
    for k, task in enumerate(tasks):
        pool = n_per_task * (_OVERSAMPLE if max_chars is not None else 1)
        ds = reasoning_gym.create_dataset(task, size=pool, seed=task_seed(seed, k), **TASK_KWARGS[task])
        kept = []
        for i in range(pool):
            messages = conversation_from_item(task, ds[i])
            if max_chars is None or sum(len(m["content"]) for m in messages) <= max_chars:
                kept.append((f"reasoning_gym/{task}[{i}]", messages))
            if len(kept) == n_per_task:
                break
        if len(kept) < n_per_task:
            raise ValueError(
                f"reasoning-gym {task}: only {len(kept)} of {pool} items fit max_chars={max_chars}; "
                f"asked for {n_per_task}"
            )
        records += kept
    return records


_OVERSAMPLE = 4  # with a character budget, draw up to 4x the items wanted


@dataclass(frozen=True, kw_only=True)
class ReasoningGymSFTBuilder(InMemoryChatBuilder):
    """The default SFT data: `n_per_task` worked problems per task; `test_size` held out."""

    tasks: tuple[str, ...] = ("chain_sum", "leg_counting", "gsm_symbolic")
    n_per_task: int = 400
    test_size: int = 96
    max_chars: int | None = 600  # question + solution; 600 chars <= ~245 SmolLM2 chatml tokens

    def load_records(self):
        records = reasoning_gym_records(
            tuple(self.tasks), self.n_per_task, self.seed, max_chars=self.max_chars
        )
        return records, {}, "reasoning_gym_math"
