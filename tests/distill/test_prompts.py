"""Prompt-only envs: prompts cut from conversations, held-out split, mixed sources, reward 0."""

import asyncio

import pytest

from jaxcook.data.registry import get_sft_builder
from jaxcook.distill.prompts import (
    PromptSource,
    conversation_prompt,
    load_prompts,
    prompt_messages_of,
)
from jaxcook.models import load_tokenizer
from jaxcook.renderers import get_renderer
from jaxcook.rl.completers import TokensWithLogprobs
from jaxcook.rl.envs.registry import get_env_builder
from jaxcook.rl.rollouts import do_group_rollout

SMALL = {"tasks": ("chain_sum",), "n_per_task": 20, "test_size": 5}


@pytest.fixture(scope="module")
def renderer():
    return get_renderer("chatml", load_tokenizer("tiny-random-smollm2"))


def test_prompt_is_the_conversation_before_the_first_assistant_message():
    conv = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "q2"},
    ]
    assert conversation_prompt(conv, "x") == conv[:2]
    with pytest.raises(ValueError, match=r"here: no user message before the first assistant message"):
        conversation_prompt([{"role": "assistant", "content": "a"}], "here")


def test_held_out_prompts_are_the_sft_builders_test_split():
    train, test = load_prompts(PromptSource(dataset_options=SMALL), seed=3)
    assert len(train) == 15 and len(test) == 5
    built = get_sft_builder("reasoning_gym_math", seed=3, **SMALL)
    records, _, _ = built.load_records()
    questions = {m[0]["content"] for _, m in records}
    assert {p[-1]["content"] for p in train + test} == questions
    assert not {p[-1]["content"] for p in train} & {p[-1]["content"] for p in test}


def test_sources_mix_in_one_batch_with_their_tags(renderer):
    sources = (
        {"dataset_options": SMALL, "groups_per_batch": 2},
        {"dataset_options": {**SMALL, "n_per_task": 11}, "groups_per_batch": 3},
    )
    builder = get_env_builder("prompts", sources=sources, group_size=2, renderer=renderer)
    train, test = asyncio.run(builder())
    assert test is None
    assert len(train) == 2  # the shorter source: ceil(6 / 3) = 2 batches (the other has ceil(15 / 2) = 8)
    tags = [b.logging_tags() for b in train.get_batch(0)]
    assert tags == [["dataset_0"]] * 2 + [["dataset_1"]] * 3


class EchoPolicy:
    async def __call__(self, ob, stop, *, max_tokens=None):
        return TokensWithLogprobs([5, 6], [-0.5, -0.25], "stop")


def test_prompt_only_env_pays_nothing_and_keeps_its_prompt(renderer):
    builder = get_env_builder(
        "prompts", sources=({"dataset_options": SMALL},), group_size=3, renderer=renderer
    )
    train, _ = asyncio.run(builder())
    group_builder = train.get_batch(0)[0]
    group = asyncio.run(do_group_rollout(group_builder, EchoPolicy()))
    assert group.get_total_rewards() == [0.0, 0.0, 0.0]
    traj = group.trajectories_G[0]
    assert prompt_messages_of(traj) == list(group_builder.messages)
    assert (
        traj.transitions[0].ob.to_ints()
        == renderer.build_generation_prompt(list(group_builder.messages)).to_ints()
    )


def test_prompt_seeds_differ_per_prompt_and_repeat_per_run():
    from jaxcook.distill.evaluation import prompt_seed

    seeds = [prompt_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100  # distinct prompts never share their random numbers
    assert seeds == [prompt_seed(0, i) for i in range(100)] and prompt_seed(1, 0) != seeds[0]
