"""The embedded SFT data: reasoning-gym worked problems and tinker-cookbook's example chats."""

from __future__ import annotations

import re

import numpy as np
import pytest
import reasoning_gym

from jaxcook.data import (
    ReasoningGymSFTBuilder,
    TinkerConversationsBuilder,
    get_sft_builder,
    reasoning_gym_records,
)
from jaxcook.data.reasoning_gym_sft import _OVERSAMPLE, BOXED_INSTRUCTION, TASK_KWARGS, task_seed
from jaxcook.renderers import TrainOnWhat
from jaxcook.rl.envs import grading

TASKS = ("chain_sum", "leg_counting", "gsm_symbolic")


def test_same_seed_same_data_and_rl_format():
    records = reasoning_gym_records(TASKS, 20, seed=5, max_chars=600)
    assert records == reasoning_gym_records(TASKS, 20, seed=5, max_chars=600)
    assert records != reasoning_gym_records(TASKS, 20, seed=6, max_chars=600)
    assert BOXED_INSTRUCTION == grading.BOXED_INSTRUCTION  # the prompt the RL envs grade
    datasets = {
        t: reasoning_gym.create_dataset(t, size=20 * _OVERSAMPLE, seed=task_seed(5, k), **TASK_KWARGS[t])
        for k, t in enumerate(TASKS)
    }
    for where, (user, assistant) in records:
        task, i = re.fullmatch(r"reasoning_gym/(\w+)\[(\d+)\]", where).groups()
        item = datasets[task][int(i)]
        assert user["content"] == f"{item['question'].rstrip()}\n\n{BOXED_INSTRUCTION}"
        assert assistant["content"].endswith(f"\n\nThe answer is \\boxed{{{item['answer']}}}.")
        # The RL grader extracts the answer and the task's own scorer accepts it.
        assert datasets[task].score_answer(grading.extract_boxed(assistant["content"]), item) == 1.0
        assert len(user["content"]) + len(assistant["content"]) <= 600


def test_worked_steps_are_arithmetic_that_checks():
    for _, (_, assistant) in reasoning_gym_records(("chain_sum", "leg_counting"), 30, seed=0):
        for line in assistant["content"].split("\n\n")[0].splitlines():
            lhs, rhs = line.split(":")[-1].split("=")
            assert eval(lhs) == int(rhs), line  # "12 + 7 = 19", "spider: 3 * 8 = 24", "Total: 24 + 6 = 30"


def test_default_builder_fits_256_tokens(renderer):
    builder = get_sft_builder()
    assert builder == ReasoningGymSFTBuilder()
    data = builder.build(renderer, batch_size=8, max_length=256)
    assert data.stats["data/train_records"] == 3 * 400 - 96 and len(data.test) == 96
    assert len(data.train) == (3 * 400 - 96) // 8
    assert "data/test_truncated" not in data.stats  # nothing in the test set was cut
    records = data.train.records.records
    lengths = [
        renderer.build_supervised_example(m, TrainOnWhat.ALL_ASSISTANT_MESSAGES)[0].length for _, m in records
    ]
    assert max(lengths) <= 256
    batch = data.train.get_batch(0)
    assert len(batch) == 8
    np.testing.assert_allclose([d.loss_fn_inputs["weights"].sum() for d in batch], 1.0, rtol=1e-5)


def test_tinker_example_conversations(renderer):
    data = TinkerConversationsBuilder().build(renderer, batch_size=8, max_length=512)
    assert data.stats == {
        "data/bad_lines_skipped": 0,
        "data/train_records": 112,
        "data/test_records": 16,
        "data/test_datums": 16,
        "data/train_batches": 14,
    }
    assert all(len(data.train.get_batch(i)) == 8 for i in range(len(data.train)))


def test_unknown_task():
    with pytest.raises(ValueError, match=r"\['products'\] have no worked solution"):
        reasoning_gym_records(("products",), 3, seed=0)
