"""Each environment rolled out with a scripted policy and a fake character-level ChatML renderer."""

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from jaxcook.rl.data_processing import compute_advantages, trajectory_to_data
from jaxcook.rl.envs.arithmetic import (
    ArithmeticDatasetBuilder,
    ArithmeticEnv,
    ArithmeticProblem,
    few_shot_prefix,
    make_problem,
)
from jaxcook.rl.envs.calculator import CalculatorDatasetBuilder, make_calculator_env
from jaxcook.rl.envs.gsm8k import Gsm8kDatasetBuilder, load_gsm8k_jsonl
from jaxcook.rl.envs.guess_number import GuessNumberDatasetBuilder, GuessNumberEnv, make_guess_number_env
from jaxcook.rl.envs.message_env import EnvFromMessageEnv, MessageEnv, MessageStepResult
from jaxcook.rl.envs.reasoning_gym_env import ReasoningGymDatasetBuilder
from jaxcook.rl.envs.safe_eval import safe_eval
from jaxcook.rl.metrics import compute_trajectory_metrics
from jaxcook.rl.rollouts import RolloutConfig, do_batch_rollout, do_group_rollout, do_single_rollout
from tests.rl.fakes import FakeRenderer, ScriptedCompleter, last_user_text

DATA = Path(__file__).parent / "data"
R = FakeRenderer()
END = "<|im_end|>"


def run(coro):
    return asyncio.run(coro)


# --- arithmetic -------------------------------------------------------------------------------


def test_make_problem_is_deterministic_and_respects_knobs():
    a = make_problem(np.random.default_rng(3), num_digits=3, num_operands=3, operators="+-*")
    b = make_problem(np.random.default_rng(3), num_digits=3, num_operands=3, operators="+-*")
    assert a == b
    operands = [int(x) for x in re.findall(r"\d+", a.expression)]
    assert len(operands) == 3 and all(100 <= x <= 999 for x in operands)
    assert a.answer == str(safe_eval(a.expression))


def _solve(prompt: str) -> str:
    expr = re.search(r"What is (.*?)\?", last_user_text(prompt)).group(1)
    return str(safe_eval(expr))


@pytest.mark.parametrize(
    "reply, reward, fmt, correct",
    [
        ("68" + END, 1.0, 1.0, 1.0),
        ("23 + 45 = 68" + END, 0.9, 0.0, 1.0),  # right but not a bare number: -format_coef
        ("67" + END, 0.0, 1.0, 0.0),
        ("68", 0.9, 0.0, 1.0),  # no stop token: format fails
        ("I don't know" + END, -0.1, 0.0, 0.0),
    ],
)
def test_arithmetic_rewards_plain(reply, reward, fmt, correct):
    env = ArithmeticEnv(ArithmeticProblem("23 + 45", "68"), R)
    traj = run(do_single_rollout(ScriptedCompleter(lambda p: reply), env))
    (tr,) = traj.transitions
    assert tr.reward == pytest.approx(reward)
    assert tr.metrics == {"format": fmt, "correct": correct}


@pytest.mark.parametrize(
    "reply, reward, fmt, correct",
    [
        ("23 + 45 = 68" + END, 1.0, 1.0, 1.0),
        ("23+45=68." + END, 1.0, 1.0, 1.0),
        ("68" + END, 0.9, 0.0, 1.0),  # right, but not the equation
        ("20 + 45 = 65" + END, -0.1, 0.0, 0.0),  # the expression was miscopied
        ("23 + 45 = 67" + END, 0.0, 1.0, 0.0),
    ],
)
def test_arithmetic_rewards_equation(reply, reward, fmt, correct):
    env = ArithmeticEnv(ArithmeticProblem("23 + 45", "68"), R, answer_format="equation")
    (tr,) = run(do_single_rollout(ScriptedCompleter(lambda p: reply), env)).transitions
    assert (tr.reward, tr.metrics["format"], tr.metrics["correct"]) == (pytest.approx(reward), fmt, correct)


def test_max_operand_caps_operands():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = make_problem(rng, num_digits=1, num_operands=3, max_operand=3)
        assert all(1 <= int(x) <= 3 for x in re.findall(r"\d+", p.expression))
    with pytest.raises(ValueError, match="max_operand"):
        ArithmeticDatasetBuilder(renderer=R, num_digits=2, max_operand=5)


def test_arithmetic_few_shot_examples_match_the_task_shape():
    prefix = few_shot_prefix(2, "plain", num_digits=2, num_operands=3, operators="+")
    assert prefix == few_shot_prefix(2, "plain", num_digits=2, num_operands=3, operators="+")
    for user, assistant in zip(prefix[::2], prefix[1::2]):
        expr = re.search(r"What is (.*?)\?", user["content"]).group(1)
        assert len(re.findall(r"\b\d\d\b", expr)) == 3 and assistant["content"] == str(safe_eval(expr))
    env = ArithmeticEnv(ArithmeticProblem("23 + 45", "68"), R, convo_prefix=prefix)
    ob, stop = run(env.initial_observation())
    text = R.decode(ob.to_ints())
    assert text.count("<|im_start|>user") == 3 and text.endswith(
        "What is 23 + 45? Answer with only the number.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert stop == [R.get_stop_sequences()[0]]
    boxed = few_shot_prefix(1, "boxed", num_digits=1, num_operands=2, operators="*")
    assert boxed[1]["content"].startswith("\\boxed{")


def test_arithmetic_dataset_rollout_end_to_end():
    builder = ArithmeticDatasetBuilder(
        renderer=R, groups_per_batch=3, group_size=4, n_batches=2, n_test_problems=5, answer_format="plain"
    )
    train, test = run(builder())
    assert len(train) == 2 and len(test) == 1 and len(test.get_batch(0)) == 5
    exprs = lambda ds, i: [run(b.make_envs())[0].problem.expression for b in ds.get_batch(i)]  # noqa: E731
    assert exprs(train, 0) == exprs(train, 0)  # deterministic
    assert exprs(train, 0) != exprs(train, 1) and exprs(train, 0) != exprs(test, 0)[:3]
    calls = iter(range(1000))
    policy = ScriptedCompleter(lambda p: (_solve(p) if next(calls) % 2 else "0") + END)
    batch = run(do_batch_rollout(train.get_batch(0), policy))
    assert policy.peak_in_flight == 12  # 3 groups x 4 envs sampled together
    m = compute_trajectory_metrics(batch.groups)
    assert m["env/all/correct"] == pytest.approx(0.5) and m["env/all/format"] == 1.0
    adv = compute_advantages(batch.groups)
    assert all(abs(a.sum()) < 1e-6 for a in adv)


# --- guess the number ------------------------------------------------------------------------


def test_guess_number_logic():
    env = GuessNumberEnv(secret=13, lo=1, hi=20, max_guesses=4)
    run(env.initial_observation())
    r1 = run(env.step({"role": "assistant", "content": "10"}))
    assert (r1.reward, r1.episode_done, r1.next_messages[-1]["content"]) == (0.0, False, "Higher.")
    r2 = run(env.step({"role": "assistant", "content": "My guess is 15"}))
    assert r2.next_messages[-1]["content"] == "Lower."
    r3 = run(env.step({"role": "assistant", "content": "hmm"}))
    assert r3.metrics["invalid_guess"] == 1.0 and "single integer" in r3.next_messages[-1]["content"]
    r4 = run(env.step({"role": "assistant", "content": "13"}))
    assert (r4.reward, r4.episode_done, r4.metrics["correct"], r4.metrics["num_guesses"]) == (
        1.0,
        True,
        1.0,
        4.0,
    )
    env = GuessNumberEnv(secret=13, lo=1, hi=20, max_guesses=1)
    run(env.initial_observation())
    r = run(env.step({"role": "assistant", "content": "2"}))
    assert (r.reward, r.episode_done, r.metrics["correct"]) == (0.0, True, 0.0)


def _bisect(prompt: str) -> str:
    """Binary search over [1, 20] from the feedback in the transcript."""
    lo, hi = 1, 20
    guesses = re.findall(r"<\|im_start\|>assistant\n(\d+)<\|im_end\|>", prompt)
    feedback = re.findall(r"<\|im_start\|>user\n(Higher|Lower)\.<\|im_end\|>", prompt)
    for g, f in zip(guesses, feedback):
        lo, hi = (int(g) + 1, hi) if f == "Higher" else (lo, int(g) - 1)
    return f"{(lo + hi) // 2}{END}"


def test_guess_number_rollout_merges_into_one_datum():
    env = make_guess_number_env(R, secret=17, lo=1, hi=20, max_guesses=5, max_trajectory_tokens=None)
    traj = run(do_single_rollout(ScriptedCompleter(_bisect), env))
    # 10 -> Higher, 15 -> Higher, 18 -> Lower, 16 -> Higher, 17
    assert [R.decode(t.ac.tokens) for t in traj.transitions] == [f"{g}{END}" for g in (10, 15, 18, 16, 17)]
    assert traj.total_step_reward() == 1.0 and traj.stop_reason == "completed"
    (datum,) = trajectory_to_data(traj, 1.0)  # each prompt extends the last: one datum
    mask = datum.loss_fn_inputs["mask"]
    assert mask.sum() == sum(len(t.ac.tokens) for t in traj.transitions)


def test_guess_number_dataset():
    train, test = run(GuessNumberDatasetBuilder(renderer=R, groups_per_batch=4, group_size=2, n_batches=3)())
    batch = run(do_batch_rollout(train.get_batch(2), ScriptedCompleter(_bisect)))
    # bisection finds any secret in [1, 20] within 5 guesses
    assert all(r == 1.0 for g in batch.groups for r in g.get_total_rewards())
    assert len(test.get_batch(0)) == 64


# --- message env adapter ----------------------------------------------------------------------


class EchoEnv(MessageEnv):
    """Never done; replies with a long user message each turn."""

    def __init__(self):
        self.messages = []

    async def initial_observation(self):
        self.messages = [{"role": "user", "content": "hi"}]
        return list(self.messages)

    async def step(self, message):
        self.messages += [message, {"role": "user", "content": "x" * 20}]
        return MessageStepResult(0.5, False, list(self.messages), {"echo": 1.0})


def test_message_env_length_parse_and_overflow_paths():
    env = EnvFromMessageEnv(R, EchoEnv(), context_overflow_reward=-0.1, failed_parse_reward=-1.0)
    run(env.initial_observation())
    res = run(env.step(R.encode("cut"), extra={"stop_reason": "length"}))
    assert (res.reward, res.episode_done, res.stop_reason, res.metrics["max_tokens_reached"]) == (
        -0.1,
        True,
        "max_tokens",
        1.0,
    )
    env = EnvFromMessageEnv(R, EchoEnv(), failed_parse_reward=-1.0)
    run(env.initial_observation())
    res = run(env.step(R.encode("no stop token"), extra={"stop_reason": "stop"}))
    assert (res.reward, res.stop_reason, res.metrics["parse_error"]) == (-1.0, "parse_error", 1.0)
    # prompt "<s>user\nhi<e>\n<s>assistant\n" is 23 tokens; 23 + 10 > 30 -> overflow at the start
    env = EnvFromMessageEnv(R, EchoEnv(), max_trajectory_tokens=30, max_generation_tokens=10)
    overflow = run(env.initial_observation())
    assert overflow.reward == -0.1 and overflow.metrics == {"context_overflow": 1.0}
    # with room for the first prompt, the next one (+ reply + 20 x's) overflows: env reward + penalty
    env = EnvFromMessageEnv(R, EchoEnv(), max_trajectory_tokens=50, max_generation_tokens=10)
    traj = run(do_single_rollout(ScriptedCompleter(lambda p: "ok" + END), env))
    assert len(traj.transitions) == 1 and traj.stop_reason == "context_overflow"
    assert traj.transitions[0].reward == pytest.approx(0.5 - 0.1)
    assert traj.transitions[0].metrics == {
        "echo": 1.0,
        "max_tokens_reached": 0.0,
        "parse_error": 0.0,
        "context_overflow": 1.0,
    }


# --- calculator tool use ---------------------------------------------------------------------


def _tool_user(prompt: str) -> str:
    """Calls the calculator once with the question's expression, then answers with its result."""
    results = re.findall(r"<\|im_start\|>tool\n(.*?)<\|im_end\|>", prompt)
    if results:
        return f"The answer is {results[-1]}.{END}"
    expr = re.search(r"What is (.*?)\?", last_user_text(prompt)).group(1)
    call = json.dumps({"name": "calculator", "arguments": {"expression": expr}})
    return f"<tool_call>{call}</tool_call>{END}"


def test_calculator_env_tool_call_then_answer():
    env = make_calculator_env(
        R, ArithmeticProblem("123 * 45", "5535"), max_tool_calls=3, max_trajectory_tokens=None
    )
    traj = run(do_single_rollout(ScriptedCompleter(_tool_user), env))
    assert len(traj.transitions) == 2 and traj.total_step_reward() == 1.0
    second_prompt = R.decode(traj.transitions[1].ob.to_ints())
    assert "<|im_start|>tool\n5535<|im_end|>" in second_prompt and "calculator" in second_prompt
    assert (
        traj.transitions[1].metrics["tool_calls"] == 1.0 and traj.transitions[0].metrics["tool_errors"] == 0.0
    )
    assert len(trajectory_to_data(traj, 1.0)) == 1  # the tool turn extends the prompt


def test_calculator_env_errors_and_limits():
    bad = json.dumps({"name": "calculator", "arguments": {"expression": "__import__('os')"}})
    replies = iter(
        [f"<tool_call>{bad}</tool_call>{END}", f"<tool_call>{{oops</tool_call>{END}", f"5535{END}"]
    )
    env = make_calculator_env(
        R, ArithmeticProblem("123 * 45", "5535"), max_tool_calls=3, max_trajectory_tokens=None
    )
    traj = run(do_single_rollout(ScriptedCompleter(lambda p: next(replies)), env))
    prompt3 = R.decode(traj.transitions[2].ob.to_ints())
    assert "error: Call is not allowed" in prompt3 and "could not parse the tool call" in prompt3
    assert [t.metrics["tool_errors"] for t in traj.transitions] == [1.0, 1.0, 0.0]
    assert traj.total_step_reward() == 1.0  # the final answer is still right
    # one call too many ends the episode with reward 0
    call = json.dumps({"name": "calculator", "arguments": {"expression": "1+1"}})
    env = make_calculator_env(
        R, ArithmeticProblem("1 + 1", "2"), max_tool_calls=1, max_trajectory_tokens=None
    )
    traj = run(do_single_rollout(ScriptedCompleter(lambda p: f"<tool_call>{call}</tool_call>{END}"), env))
    assert len(traj.transitions) == 2 and traj.total_step_reward() == 0.0


def test_calculator_dataset():
    builder = CalculatorDatasetBuilder(
        renderer=R, groups_per_batch=2, group_size=3, n_batches=1, n_test_problems=0
    )
    train, test = run(builder())
    assert test is None
    group = run(do_group_rollout(train.get_batch(0)[0], ScriptedCompleter(_tool_user)))
    assert group.get_total_rewards() == [1.0, 1.0, 1.0]


# --- GSM8K ------------------------------------------------------------------------------------


def test_gsm8k_local_jsonl_rollout():
    rows = load_gsm8k_jsonl(DATA / "gsm8k_tiny.jsonl")
    assert [r["answer"] for r in rows] == ["21", "16", "125", "1200", "45"]
    answers = {r["question"]: r["answer"] for r in rows}
    builder = Gsm8kDatasetBuilder(
        renderer=R,
        train_path=str(DATA / "gsm8k_tiny.jsonl"),
        test_path=str(DATA / "gsm8k_tiny.jsonl"),
        groups_per_batch=2,
        group_size=2,
    )
    train, test = run(builder())
    assert len(train) == 3 and len(train.get_batch(2)) == 1 and len(test.get_batch(0)) == 5

    def respond(prompt):
        q = last_user_text(prompt).split(" Provide a numerical")[0]
        return f"Working... \\boxed{{{answers[q]}}}{END}"

    batch = run(do_batch_rollout(test.get_batch(0), ScriptedCompleter(respond)))
    assert all(r == 1.0 for g in batch.groups for r in g.get_total_rewards())


def test_gsm8k_bad_file_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*####"):
        load_gsm8k_jsonl(path)
    path.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing"):
        load_gsm8k_jsonl(path)


# --- reasoning-gym ----------------------------------------------------------------------------


def test_reasoning_gym_rollout_uses_its_scorer():
    builder = ReasoningGymDatasetBuilder(
        renderer=R,
        dataset_name="basic_arithmetic",
        n_train_problems=6,
        n_test_problems=2,
        groups_per_batch=3,
        group_size=2,
    )
    train, test = run(builder())
    assert len(train) == 2 and len(test.get_batch(0)) == 2
    builders = train.get_batch(0)
    items = {run(b.make_envs())[0].get_question(): run(b.make_envs())[0].item["answer"] for b in builders}

    def respond(prompt):
        answer = items[last_user_text(prompt)]
        return f"\\boxed{{{answer}}}{END}" if "boxed" in prompt else answer

    batch = run(do_batch_rollout(builders, ScriptedCompleter(respond)))
    assert all(r == 1.0 for g in batch.groups for r in g.get_total_rewards())
    wrong = run(do_batch_rollout(builders, ScriptedCompleter(lambda p: f"\\boxed{{nope}}{END}")))
    assert all(r == 0.0 for g in wrong.groups for r in g.get_total_rewards())  # format ok, answer wrong
    with pytest.raises(ValueError, match="no_such_task"):
        run(ReasoningGymDatasetBuilder(renderer=R, dataset_name="no_such_task")())


def test_rollout_config_max_tokens_reaches_the_policy():
    env = ArithmeticEnv(ArithmeticProblem("1 + 1", "2"), R)
    policy = ScriptedCompleter(lambda p: "2222222" + END)
    traj = run(do_single_rollout(policy, env, RolloutConfig(max_tokens=3)))
    assert policy.calls[0][1] == 3 and traj.stop_reason == "max_tokens"
    assert traj.transitions[0].metrics["format"] == 0.0


def test_evaluate_rl_dataset_prefixes_metrics():
    from jaxcook.rl.evaluation import evaluate_rl_dataset

    _, test = run(ArithmeticDatasetBuilder(renderer=R, n_test_problems=6, answer_format="plain")())
    metrics = run(evaluate_rl_dataset(test, ScriptedCompleter(lambda p: _solve(p) + END)))
    assert metrics["test/env/all/correct"] == 1.0 and metrics["test/env/all/total_episodes"] == 6
    assert metrics["test/rollout_errors/total"] == 0


def test_group_builders_pickle():
    import pickle

    train, _ = run(ArithmeticDatasetBuilder(renderer=R, groups_per_batch=1, group_size=2, n_batches=1)())
    (builder,) = train.get_batch(0)
    clone = pickle.loads(pickle.dumps(builder))
    q = [e.get_question() for e in run(clone.make_envs())]
    assert q == [e.get_question() for e in run(builder.make_envs())] and len(q) == 2
