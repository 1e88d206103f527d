"""The offline default preference set (correct vs slipped solutions) and pairs from sampled replies."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcook.data.reasoning_gym_sft import conversation_from_item
from jaxcook.preference import (
    ReasoningGymComparisonBuilder,
    boxed_answer_grader,
    check_pairs,
    comparisons_from_samples,
    reasoning_gym_pairs,
)
from jaxcook.preference.verifiable import SOLVERS, wrong_values
from jaxcook.renderers import get_text_content
from jaxcook.rl.envs.grading import extract_boxed

TASKS = ("chain_sum", "leg_counting")


@pytest.fixture(scope="module")
def pairs():
    return reasoning_gym_pairs(TASKS, 40, seed=0, max_chars=600)


def _scorer(task):
    import reasoning_gym

    return reasoning_gym.create_dataset(task, size=1, seed=0)  # score_answer reads only the item


def test_chosen_is_correct_and_rejected_wrong_by_the_task_scorer(pairs):
    assert len(pairs) == 80
    for p in pairs:
        chosen, rejected = (get_text_content(c[0]) for c in p.labeled.chosen_rejected())
        scorer = _scorer(p.task)
        assert scorer.score_answer(extract_boxed(chosen), p.item) == 1.0, p.where
        assert scorer.score_answer(extract_boxed(rejected), p.item) == 0.0, p.where
        assert extract_boxed(chosen) != extract_boxed(rejected)


def test_chosen_is_the_sft_format_and_rejected_differs_only_in_numbers(pairs):
    for p in pairs:
        sft = conversation_from_item(p.task, p.item)  # the default SFT data's text for this item
        assert p.labeled.comparison.prompt_conversation == sft[:1]
        chosen, rejected = (get_text_content(c[0]) for c in p.labeled.chosen_rejected())
        assert chosen == sft[1]["content"]
        # Same words and layout: replacing every digit leaves the two texts equal.
        strip = str.maketrans("0123456789-", "###########")
        assert chosen.translate(strip).replace("#", "") == rejected.translate(strip).replace("#", "")


def test_same_token_length_and_both_label_sides(pairs, tokenizer):
    same = [len(tokenizer.encode(get_text_content(c[0]))) for p in pairs for c in p.labeled.chosen_rejected()]
    chosen_len, rejected_len = np.array(same[0::2]), np.array(same[1::2])
    assert (chosen_len == rejected_len).all()  # a length-keeping slip existed for every one of these 80
    labels = [p.labeled.label for p in pairs]
    assert 20 < labels.count("A") < 60 and set(labels) == {"A", "B"}  # chosen side random, p = 1/2


def test_deterministic_in_the_seed(pairs):
    again = reasoning_gym_pairs(TASKS, 40, seed=0, max_chars=600)
    assert [p.labeled for p in again] == [p.labeled for p in pairs]
    other = reasoning_gym_pairs(TASKS, 40, seed=1, max_chars=600)
    assert [p.labeled for p in other] != [p.labeled for p in pairs]


def test_off_topic_and_mixed_rejections(pairs):
    mixed = reasoning_gym_pairs(TASKS, 40, seed=0, max_chars=600, rejected="mixed")
    kinds = [p.where.rsplit("/", 1)[1] for p in mixed]
    assert kinds == ["slip", "off_topic"] * 40  # alternating within each task
    for p in mixed:
        chosen, rejected = (get_text_content(c[0]) for c in p.labeled.chosen_rejected())
        assert chosen == conversation_from_item(p.task, p.item)[1]["content"]
        assert _scorer(p.task).score_answer(extract_boxed(rejected), p.item) == 0.0, p.where
    off = [p for p in mixed if p.where.endswith("/off_topic")]
    for p in off:  # a correct solution of another problem: every line's arithmetic holds
        rejected = get_text_content(p.labeled.chosen_rejected()[1][0])
        for line in rejected.splitlines()[:-2]:
            lhs, rhs = line.split(":")[-1].split("=")
            assert eval(lhs) == int(rhs), (p.where, line)  # the line holds only digits and + - *
    with pytest.raises(ValueError, match="rejected must be one of"):
        reasoning_gym_pairs(TASKS, 2, seed=0, rejected="wrong")


def test_slips_carry_through_and_wrong_values():
    item = {"question": "?", "answer": "140", "metadata": {"expression": "42 + 66 + 69 - 37"}}
    lines, answer, _ = SOLVERS["chain_sum"](item, (0, 109))
    # 42 + 66 slipped to 109: every later line follows from it, and the answer is off by 1.
    assert lines == ["42 + 66 = 109", "109 + 69 = 178", "178 - 37 = 141"] and answer == 141
    assert SOLVERS["chain_sum"](item, None)[1:] == (140, [108, 177, 140])
    leg = {"question": "?", "answer": "14", "metadata": {"animals": {"dog": 3, "bird": 1}}}
    # dog 3 * 4 = 12, bird 1 * 2 = 2; a slip on the total (index 2) changes only the last line.
    lines, answer, values = SOLVERS["leg_counting"](leg, (2, 15))
    assert lines == ["dog: 3 * 4 = 12", "bird: 1 * 2 = 2", "Total: 12 + 2 = 15"] and answer == 15
    assert values == [12, 2, 14]
    assert wrong_values(7, nonnegative=True) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 17]
    near = {138, 139, 141, 142, 130, 150, 40, 240}  # 140 -+ 1, 2, 10, 100
    digits = {d * 100 + 40 for d in range(2, 10)} | {100 + 10 * d for d in range(10)} | set(range(141, 150))
    assert set(wrong_values(140)) == (near | digits) - {140}  # no leading 0: 040 is not a digit slip
    assert wrong_values(-3) == [-13, -9, -8, -7, -6, -5, -4, -2, -1, 0, 7]  # digit slips keep the sign


def test_default_builder_builds_dpo_pairs(renderer):
    data = ReasoningGymComparisonBuilder(n_per_task=6, test_size=4).build_dpo(
        renderer, batch_size=4, max_length=256
    )
    assert data.stats["data/train_records"] == 8 and len(data.train) == 2
    batch = data.train.get_batch(0)
    check_pairs(batch)
    assert len(batch) == 8 and data.train.stats().get("data/truncated", 0) == 0
    check_pairs(data.test)


def test_comparisons_from_samples():
    prompts = [[{"role": "user", "content": f"q{k}"}] for k in range(4)]
    answers = ["1", "2", "3", "4"]

    def r(text):
        return {"role": "assistant", "content": f"so \\boxed{{{text}}}"}

    samples = [
        [r("1"), r("5"), r("1.0"), r("6"), r("1")],  # 2 distinct correct x 2 wrong = 4 possible pairs
        [r("2"), r("2")],  # nothing wrong to reject
        [r("7"), r("8")],  # nothing correct: the reference is chosen
        [r("9")],  # nothing correct, no reference
    ]
    references = [None, None, [{"role": "assistant", "content": "ref \\boxed{3}"}], None]
    grade = boxed_answer_grader(answers)
    out, counts = comparisons_from_samples(prompts, samples, grade, references=references, pairs_per_prompt=3)
    assert counts == {"pairs": 3 + 2, "prompts_no_wrong_sample": 1, "prompts_no_correct_sample": 1}
    for lc in out:
        chosen, rejected = lc.chosen_rejected()
        k = int(lc.comparison.prompt_conversation[0]["content"][1:])
        assert grade(k, chosen[-1]) and not grade(k, rejected[-1])
    first = [
        (get_text_content(c[0]), get_text_content(r_[0]))
        for c, r_ in (lc.chosen_rejected() for lc in out[:3])
    ]
    assert len(set(first)) == 3  # distinct pairs
    again, _ = comparisons_from_samples(prompts, samples, grade, references=references, pairs_per_prompt=3)
    assert again == out
    with pytest.raises(ValueError, match="4 prompts but 3 sample lists"):
        comparisons_from_samples(prompts, samples[:3], grade)
