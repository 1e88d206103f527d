"""Env rollouts through the real renderers (chatml, qwen2_5) with SmolLM2's tokenizer.

Checks what the fake renderer cannot: prompts equal SmolLM2's HF chat template, sampled tokens
round-trip through parse/render so multi-turn trajectories still merge into one datum, and tool
calls in Qwen's format are parsed and answered.
"""

import asyncio
import json
import re

import pytest

from jaxcook.renderers import get_renderer
from jaxcook.renderers.tokenizers import offline_tokenizer
from jaxcook.rl.data_processing import trajectory_to_data
from jaxcook.rl.envs.arithmetic import (
    ArithmeticDatasetBuilder,
    ArithmeticEnv,
    ArithmeticProblem,
    few_shot_prefix,
)
from jaxcook.rl.envs.calculator import CalculatorDatasetBuilder
from jaxcook.rl.envs.guess_number import make_guess_number_env
from jaxcook.rl.envs.reasoning_gym_env import ReasoningGymDatasetBuilder
from jaxcook.rl.envs.safe_eval import safe_eval
from jaxcook.rl.rollouts import do_batch_rollout, do_single_rollout
from tests.rl.fakes import ScriptedCompleter, last_user_text

END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer():
    return offline_tokenizer("smollm2")


@pytest.fixture(scope="module")
def chatml(tokenizer):
    return get_renderer("chatml", tokenizer)


def _completer(renderer, respond):
    return ScriptedCompleter(respond, encode_fn=renderer.encode, decode_fn=renderer.decode)


def run(coro):
    return asyncio.run(coro)


def test_arithmetic_prompt_matches_hf_template_and_grades(chatml, tokenizer):
    prefix = few_shot_prefix(3, "plain", num_digits=2, num_operands=2, operators="+")
    env = ArithmeticEnv(ArithmeticProblem("23 + 45", "68"), chatml, convo_prefix=prefix)
    ob, stop = run(env.initial_observation())
    convo = [*env.convo_prefix, {"role": "user", "content": env.get_question()}]
    text = tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=False)
    assert ob.to_ints() == tokenizer.encode(text, add_special_tokens=False)
    assert stop == [tokenizer.convert_tokens_to_ids(END)]
    traj = run(do_single_rollout(_completer(chatml, lambda p: "68" + END), env))
    assert traj.transitions[0].reward == 1.0 and traj.transitions[0].metrics["format"] == 1.0


def test_arithmetic_batch_with_chatml(chatml):
    train, _ = run(ArithmeticDatasetBuilder(renderer=chatml, groups_per_batch=2, group_size=3, n_batches=1)())

    def respond(prompt):  # the default "equation" answer format
        expr = re.search(r"What is (.*?)\?", last_user_text(prompt)).group(1)
        return f"{expr} = {safe_eval(expr)}{END}"

    batch = run(do_batch_rollout(train.get_batch(0), _completer(chatml, respond)))
    assert [g.get_total_rewards() for g in batch.groups] == [[1.0] * 3] * 2


def test_guess_number_trajectory_is_one_datum_with_real_tokenizer(chatml):
    def bisect(prompt):
        lo, hi = 1, 20
        turns = re.findall(r"<\|im_start\|>assistant\n(\d+)<\|im_end\|>\n<\|im_start\|>user\n(\w+)", prompt)
        for g, f in turns:
            lo, hi = (int(g) + 1, hi) if f == "Higher" else (lo, int(g) - 1)
        return f"{(lo + hi) // 2}{END}"

    env = make_guess_number_env(chatml, secret=3, lo=1, hi=20, max_guesses=5, max_trajectory_tokens=None)
    traj = run(do_single_rollout(_completer(chatml, bisect), env))
    assert traj.total_step_reward() == 1.0 and len(traj.transitions) >= 3
    (datum,) = trajectory_to_data(traj, 1.0)
    # the last observation + last action is the whole datum sequence
    last = traj.transitions[-1]
    assert datum.model_input.to_ints() + [int(datum.loss_fn_inputs["target_tokens"][-1])] == (
        last.ob.to_ints() + last.ac.tokens
    )


def test_calculator_with_qwen2_5_renderer_on_smollm2_tokenizer(tokenizer):
    renderer = get_renderer("qwen2_5", tokenizer)

    def respond(prompt):
        results = re.findall(r"<tool_response>\n(.*?)\n</tool_response>", prompt)
        if results:
            return f"The answer is {results[-1]}.{END}"
        expr = re.search(r"What is (.*?)\?", last_user_text(prompt)).group(1)
        call = json.dumps({"name": "calculator", "arguments": {"expression": expr}})
        return f"<tool_call>\n{call}\n</tool_call>{END}"

    train, _ = run(
        CalculatorDatasetBuilder(renderer=renderer, groups_per_batch=2, group_size=2, n_batches=1)()
    )
    batch = run(do_batch_rollout(train.get_batch(0), _completer(renderer, respond)))
    for group in batch.groups:
        assert group.get_total_rewards() == [1.0, 1.0]
        traj = group.trajectories_G[0]
        assert len(traj.transitions) == 2 and traj.transitions[1].metrics["tool_calls"] == 1.0
        assert len(trajectory_to_data(traj, 1.0)) == 1  # the tool round trip extends the prompt


def test_reasoning_gym_with_chatml(chatml):
    train, _ = run(
        ReasoningGymDatasetBuilder(
            renderer=chatml,
            dataset_name="chain_sum",
            n_train_problems=4,
            n_test_problems=0,
            groups_per_batch=4,
            group_size=1,
        )()
    )
    builders = train.get_batch(0)
    envs = [run(b.make_envs())[0] for b in builders]
    answers = {e.get_question(): e.item["answer"] for e in envs}

    def respond(prompt):
        return f"\\boxed{{{answers[last_user_text(prompt)]}}}{END}"

    batch = run(do_batch_rollout(builders, _completer(chatml, respond)))
    assert [g.get_total_rewards() for g in batch.groups] == [[1.0]] * 4
