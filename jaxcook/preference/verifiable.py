"""Preference pairs from verifiable tasks: the offline default set, and pairs from a model's own samples.

The default set (no hub): `reasoning-gym` problems, chosen = a correct worked solution, rejected =
the same solution with one arithmetic slip carried through to a wrong boxed answer (or, with
`rejected="off_topic"|"mixed"`, a correct solution of another problem). Both are in
the format of the default SFT data (`jaxcook.data.reasoning_gym_sft`; a test checks the chosen
text is that module's, character for character):

    user:      {question}\\n\\nPut your final answer within \\boxed{}.
    assistant: {one step per line}\\n\\nThe answer is \\boxed{N}.

The slip replaces one intermediate or final number by a plausible wrong one (off by 1, 2, 10 or
100, or one digit changed), and every later line follows from it, so the rejected solution looks
as careful as the chosen one and only its arithmetic is wrong. Among the possible slips, one that
keeps every number's digit count and sign is taken when there is one (SmolLM2 writes one token per
digit, so the two completions then have the same number of tokens): length and style say nothing
about which is right. Tasks: `chain_sum` and `leg_counting` (the SFT set's tasks with step-by-step
solutions). Problems come from a different generator stream than the SFT data of the same seed,
and the chosen side is A or B at random (seeded).

`comparisons_from_samples` makes pairs from sampled completions and a grader (the workflow wires
in the sampler): correct samples are chosen, wrong samples rejected.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from jaxcook.data.reasoning_gym_sft import BOXED_INSTRUCTION, TASK_KWARGS
from jaxcook.preference.builders import ComparisonBuilder, ComparisonSplits, in_memory_splits
from jaxcook.preference.types import Comparison, LabeledComparison
from jaxcook.renderers import Message, get_text_content

Slip = tuple[int, int]  # (index of the number that is wrong, the wrong value)
_PREF_STREAM = 1  # generator seeds differ from the SFT set's `task_seed(seed, k)`


def _chain_sum(item: dict, slip: Slip | None) -> tuple[list[str], int, list[int]]:
    """(lines, answer, slippable values) of a chain sum with the slip applied.

    The slippable values are the numbers each line computes from the line above it, before any
    slip: with `slip=None`, the correct value of every number a slip may replace.
    """
    terms = item["metadata"]["expression"].split()
    total = int(terms[0])
    lines, values = [], []
    for k, (op, x) in enumerate(zip(terms[1::2], terms[2::2], strict=True)):
        if op not in ("+", "-"):
            raise ValueError(f"chain_sum: unexpected operator {op!r} in {item['metadata']['expression']!r}")
        new = total + int(x) if op == "+" else total - int(x)
        values.append(new)
        if slip is not None and slip[0] == k:
            new = slip[1]
        lines.append(f"{total} {op} {x} = {new}")
        total = new
    if not lines:
        values.append(total)
        if slip is not None:
            total = slip[1]
        lines.append(f"{total}")
    return lines, total, values


def _leg_counting(item: dict, slip: Slip | None) -> tuple[list[str], int, list[int]]:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    rows = [(name, count, ANIMALS[name]) for name, count in item["metadata"]["animals"].items()]
    products = [count * legs for _, count, legs in rows]
    values = [*products, sum(products)]
    if slip is not None and slip[0] < len(products):
        products[slip[0]] = slip[1]
    lines = [f"{name}: {count} * {legs} = {p}" for (name, count, legs), p in zip(rows, products, strict=True)]
    total = sum(products) if slip is None or slip[0] < len(products) else slip[1]
    lines.append(f"Total: {' + '.join(str(p) for p in products)} = {total}")
    return lines, total, values


# Worked solutions that can carry a slip: item, slip -> (lines, answer, slippable values).
SOLVERS: dict[str, Callable[[dict, Slip | None], tuple[list[str], int, list[int]]]] = {
    "chain_sum": _chain_sum,
    "leg_counting": _leg_counting,
}
_NONNEGATIVE = {"leg_counting"}  # counts of legs cannot go below zero


def solution_text(lines: Sequence[str], answer: int | str) -> str:
    return "\n".join(lines) + f"\n\nThe answer is \\boxed{{{answer}}}."


def question_message(item: dict) -> Message:
    return {"role": "user", "content": f"{item['question'].rstrip()}\n\n{BOXED_INSTRUCTION}"}


def wrong_values(n: int, *, nonnegative: bool = False) -> list[int]:
    """Plausible wrong values of `n`: off by 1, 2, 10 or 100, or one digit changed (sorted)."""
    out = {n + d for d in (-100, -10, -2, -1, 1, 2, 10, 100) if abs(d) < 100 or abs(n) >= 100}
    digits = str(abs(n))
    for i, old in enumerate(digits):
        for new in "0123456789":
            if new != old and not (i == 0 and new == "0" and len(digits) > 1):
                out.add(int(digits[:i] + new + digits[i + 1 :]) * (-1 if n < 0 else 1))
    out.discard(n)
    return sorted(v for v in out if v >= 0 or not nonnegative)


def _shape(text: str) -> str:
    """The text with every digit replaced by 0: equal shapes tokenise to equally many tokens
    (one token per digit), and the signs of the numbers stay where they were."""
    return re.sub(r"\d", "0", text)


def slipped_solution(task: str, item: dict, rng: np.random.Generator) -> tuple[str, int]:
    """(wrong solution text, its wrong answer): a random slip, one keeping the shape if possible.

    The shape is the text with digits blanked: same number of digits in each number, same signs.
    """
    solve = SOLVERS[task]
    lines, answer, values = solve(item, None)
    target = _shape(solution_text(lines, answer))
    options = [
        (k, v) for k, n in enumerate(values) for v in wrong_values(n, nonnegative=task in _NONNEGATIVE)
    ]
    # Half the time try near misses (off by 1 or 2) first, else the other slips (digit errors).
    near_first = rng.random() < 0.5
    order = sorted(
        rng.permutation(len(options)),
        key=lambda j: near_first != (abs(options[j][1] - values[options[j][0]]) <= 2),
    )
    best: tuple[int, str, int] | None = None
    for j in order:
        wrong_lines, wrong_answer, _ = solve(item, options[j])
        text = solution_text(wrong_lines, wrong_answer)
        if wrong_answer == answer:  # cannot happen for sums, but a slip must change the answer
            continue
        gap = 0 if _shape(text) == target else 1 + abs(len(text) - len(target))
        if best is None or gap < best[0]:
            best = (gap, text, wrong_answer)
        if gap == 0:
            break
    if best is None:
        raise ValueError(f"{task}: no slip changes the answer of {item['question']!r}")
    return best[1], best[2]


class VerifiablePair(NamedTuple):
    where: str
    task: str
    item: dict[str, Any]  # the reasoning-gym item (grade with its dataset's `score_answer`)
    labeled: LabeledComparison


REJECTED_KINDS = ("slip", "off_topic", "mixed")


def _off_topic_solution(task: str, ds, i: int, pool: int, chosen: str) -> str:
    """The correct worked solution of the next problem (in generator order) whose text differs."""
    for j in range(1, pool):
        lines, answer, _ = SOLVERS[task](ds[(i + j) % pool], None)
        text = solution_text(lines, answer)
        if text != chosen:
            return text
    raise ValueError(f"{task}: every problem in a pool of {pool} has the same solution")


def reasoning_gym_pairs(
    tasks: Sequence[str],
    n_per_task: int,
    seed: int,
    *,
    max_chars: int | None = None,
    rejected: str = "slip",
) -> list[VerifiablePair]:
    """`n_per_task` pairs of each task, deterministic in `seed`: chosen = the correct worked solution.

    `rejected`: "slip" (the same solution with one slip carried through), "off_topic" (a correct
    solution of another problem of the same task: careful arithmetic that does not answer the
    question), or "mixed" (alternating, starting with a slip). A record's `where` ends with
    `/slip` or `/off_topic`. With `max_chars`, problems whose question + chosen solution exceed
    that many characters are passed over (the SFT set's rule: 600 characters fit SmolLM2's
    max_length 256).
    """
    import reasoning_gym

    unknown = [t for t in tasks if t not in SOLVERS]
    if unknown:
        raise ValueError(f"reasoning-gym preference tasks {unknown} unknown; known: {sorted(SOLVERS)}")
    if rejected not in REJECTED_KINDS:
        raise ValueError(f"rejected must be one of {REJECTED_KINDS}, got {rejected!r}")
    pairs = []
    for k, task in enumerate(tasks):
        gen_seed = int(np.random.SeedSequence([seed, k, _PREF_STREAM]).generate_state(1)[0])
        pool = n_per_task * (4 if max_chars is not None else 1)
        ds = reasoning_gym.create_dataset(task, size=pool, seed=gen_seed, **TASK_KWARGS[task])
        kept = []
        for i in range(pool):
            item = ds[i]
            lines, answer, _ = SOLVERS[task](item, None)
            if str(answer) != str(item["answer"]).strip():
                raise ValueError(
                    f"{task}: worked solution gives {answer}, reasoning-gym says {item['answer']!r}"
                )
            question, chosen = question_message(item), solution_text(lines, answer)
            if max_chars is not None and len(question["content"]) + len(chosen) > max_chars:
                continue
            rng = np.random.default_rng([seed, k, i])
            kind = rejected if rejected != "mixed" else REJECTED_KINDS[len(kept) % 2]
            if kind == "slip":
                wrong, _ = slipped_solution(task, item, rng)
            else:
                wrong = _off_topic_solution(task, ds, i, pool, chosen)
            labeled = LabeledComparison(
                Comparison(
                    [question],
                    [{"role": "assistant", "content": chosen}],
                    [{"role": "assistant", "content": wrong}],
                ),
                "A",
            )
            if rng.random() < 0.5:
                labeled = labeled.swap()
            kept.append(VerifiablePair(f"reasoning_gym_pref/{task}[{i}]/{kind}", task, item, labeled))
            if len(kept) == n_per_task:
                break
        if len(kept) < n_per_task:
            raise ValueError(
                f"reasoning-gym {task}: only {len(kept)} of {pool} items fit max_chars={max_chars}"
            )
        pairs += kept
    return pairs


@dataclass(frozen=True, kw_only=True)
class ReasoningGymComparisonBuilder(ComparisonBuilder):
    """The default preference data (offline): correct vs slipped (or, with `rejected`, off-topic)
    worked solutions; `test_size` held out."""

    tasks: tuple[str, ...] = ("chain_sum", "leg_counting")
    n_per_task: int = 400
    test_size: int = 64
    max_chars: int | None = 600
    rejected: str = "slip"  # "slip", "off_topic" or "mixed" (see reasoning_gym_pairs)

    def group_of(self, where: str) -> str:
        return where.rsplit("/", 1)[-1]  # the kind of rejected answer: slip or off_topic

    def load(self) -> ComparisonSplits:
        pairs = reasoning_gym_pairs(
            tuple(self.tasks), self.n_per_task, self.seed, max_chars=self.max_chars, rejected=self.rejected
        )
        records = [(p.where, p.labeled) for p in pairs]
        return in_memory_splits(
            records, test_size=self.test_size, seed=self.seed, label="reasoning_gym_pref", stats={}
        )


Grader = Callable[[int, Message], bool]  # (prompt index, sampled reply) -> correct?


def comparisons_from_samples(
    prompts: Sequence[list[Message]],
    samples: Sequence[Sequence[Message]],
    grade: Grader,
    *,
    references: Sequence[list[Message] | None] | None = None,
    pairs_per_prompt: int = 1,
    seed: int = 0,
) -> tuple[list[LabeledComparison], dict[str, int]]:
    """Pairs (correct sample, wrong sample) of each prompt, and counts.

    `samples[i]` are replies sampled for `prompts[i]`; `grade(i, reply)` says whether a reply is
    correct. Chosen: a correct sample, or `references[i]` (a completion, e.g. the reference
    solution) when no sample of prompt i is correct. Rejected: a wrong sample. Up to
    `pairs_per_prompt` distinct (chosen, rejected) pairs per prompt (repeated samples count once),
    drawn with `seed`; the chosen side is A or B at random. Counts: `pairs`,
    `prompts_no_wrong_sample` (nothing to reject), `prompts_no_correct_sample` (nothing to choose,
    no reference).
    """
    if len(samples) != len(prompts) or (references is not None and len(references) != len(prompts)):
        raise ValueError(
            f"{len(prompts)} prompts but {len(samples)} sample lists"
            + (f" and {len(references)} references" if references is not None else "")
        )
    if pairs_per_prompt < 1:
        raise ValueError(f"pairs_per_prompt must be >= 1, got {pairs_per_prompt}")
    out: list[LabeledComparison] = []
    counts: Counter[str] = Counter()
    for i, (prompt, replies) in enumerate(zip(prompts, samples, strict=True)):
        graded = [(reply, bool(grade(i, reply))) for reply in replies]
        chosen = _unique([[r] for r, ok in graded if ok])  # a repeated sample would repeat a pair
        wrong = _unique([[r] for r, ok in graded if not ok])
        if not chosen and references is not None and references[i] is not None:
            chosen = [list(references[i])]
        if not wrong:
            counts["prompts_no_wrong_sample"] += 1
            continue
        if not chosen:
            counts["prompts_no_correct_sample"] += 1
            continue
        rng = np.random.default_rng([seed, i])
        n = min(pairs_per_prompt, len(chosen) * len(wrong))
        for flat in rng.choice(len(chosen) * len(wrong), size=n, replace=False):
            c, w = divmod(int(flat), len(wrong))
            labeled = LabeledComparison(Comparison(list(prompt), chosen[c], wrong[w]), "A")
            out.append(labeled.swap() if rng.random() < 0.5 else labeled)
    counts["pairs"] = len(out)
    return out, dict(counts)


def _unique(completions: list[list[Message]]) -> list[list[Message]]:
    return [c for i, c in enumerate(completions) if c not in completions[:i]]


def boxed_answer_grader(answers: Sequence[str]) -> Grader:
    """`grade(i, reply)`: the reply's last `\\boxed{}` equals `answers[i]` (numbers compared exactly)."""
    from jaxcook.rl.envs.grading import answers_match, extract_boxed

    return lambda i, reply: answers_match(extract_boxed(get_text_content(reply)), str(answers[i]))
