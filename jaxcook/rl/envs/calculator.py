"""Tool use: the model may call a `calculator` tool through its chat format, then answers.

The tool is declared with the renderer's `create_conversation_prefix_with_tools`; the renderer's
`parse_response` turns the model's tool-call syntax into `tool_calls`. Each call's `expression`
argument is evaluated by `safe_eval` (no `eval`) and answered with a `tool` message (the result,
or "error: ..."). An assistant message without tool calls is the final answer: reward 1 if its
last number (or `\\boxed{}`) equals the problem's answer, else 0. More than `max_tool_calls`
calls end the episode with reward 0. Needs a renderer with a tool format (e.g. `qwen2_5`, which
also works with SmolLM2's tokenizer); plain `chatml` has none.

Metrics: `correct` and `tool_calls` at the end, `tool_errors` per turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import numpy as np

from jaxcook.renderers import Message, Renderer, ToolSpec, get_text_content
from jaxcook.rl.envs.arithmetic import ArithmeticProblem, make_problem
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.grading import answers_match, extract_boxed, extract_last_number
from jaxcook.rl.envs.message_env import EnvFromMessageEnv, MessageEnv, MessageStepResult
from jaxcook.rl.envs.problem import ProblemGroupBuilder, seeded_train_test
from jaxcook.rl.envs.safe_eval import UnsafeExpressionError, format_number, safe_eval
from jaxcook.rl.types import Env, EnvGroupBuilder, RLDataset

CALCULATOR_TOOL: ToolSpec = {
    "name": "calculator",
    "description": "Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. (12 + 5) * 3"}},
        "required": ["expression"],
    },
}
SYSTEM_PROMPT = "You are a helpful assistant. Use the calculator tool for arithmetic."


def run_calculator(arguments_json: str) -> str:
    """The tool's reply to one call: the value, or "error: ..." (never raises on bad input)."""
    try:
        args = json.loads(arguments_json)
        expression = args["expression"]
        return format_number(safe_eval(expression))
    except (json.JSONDecodeError, KeyError, TypeError):
        return 'error: call calculator with {"expression": "<arithmetic expression>"}'
    except (UnsafeExpressionError, ZeroDivisionError) as e:
        return f"error: {e}"


class CalculatorEnv(MessageEnv):
    def __init__(self, problem: ArithmeticProblem, tools_prefix: list[Message], *, max_tool_calls: int = 3):
        self.problem = problem
        self.tools_prefix = list(tools_prefix)
        self.max_tool_calls = max_tool_calls
        self.messages: list[Message] = []
        self.num_tool_calls = 0

    def question(self) -> str:
        return f"What is {self.problem.expression}? Give the final answer as a number."

    async def initial_observation(self) -> list[Message]:
        self.messages = [*self.tools_prefix, {"role": "user", "content": self.question()}]
        return list(self.messages)

    def _end(self, reward: float, correct: float) -> MessageStepResult:
        metrics = {"correct": correct, "tool_calls": float(self.num_tool_calls), "tool_errors": 0.0}
        return MessageStepResult(reward, True, [], metrics, {"answer": self.problem.answer})

    async def step(self, message: Message) -> MessageStepResult:
        self.messages.append(message)
        calls = message.get("tool_calls", [])
        unparsed = message.get("unparsed_tool_calls", [])
        if not calls and not unparsed:
            text = get_text_content(message)
            answer = extract_boxed(text) or extract_last_number(text)
            correct = float(answers_match(answer, self.problem.answer))
            return self._end(correct, correct)
        self.num_tool_calls += len(calls) + len(unparsed)
        if self.num_tool_calls > self.max_tool_calls:
            return self._end(0.0, 0.0)
        errors = 0
        for call in calls:
            if call.function.name == "calculator":
                result = run_calculator(call.function.arguments)
            else:
                result = f"error: unknown tool {call.function.name!r}; the only tool is calculator"
            errors += result.startswith("error")
            reply: Message = {"role": "tool", "content": result, "name": call.function.name}
            if call.id is not None:
                reply["tool_call_id"] = call.id
            self.messages.append(reply)
        for bad in unparsed:
            errors += 1
            self.messages.append(
                {"role": "tool", "content": f"error: could not parse the tool call: {bad.error}"}
            )
        return MessageStepResult(0.0, False, list(self.messages), {"tool_errors": float(errors)})


def make_calculator_env(
    renderer: Renderer, problem: ArithmeticProblem, max_tool_calls: int, max_trajectory_tokens: int | None
) -> Env:
    prefix = renderer.create_conversation_prefix_with_tools([CALCULATOR_TOOL], SYSTEM_PROMPT)
    return EnvFromMessageEnv(
        renderer,
        CalculatorEnv(problem, prefix, max_tool_calls=max_tool_calls),
        max_trajectory_tokens=max_trajectory_tokens,
        failed_parse_reward=0.0,
    )


def _calculator_group(
    cfg: CalculatorDatasetBuilder, renderer: Renderer, rng: np.random.Generator, group_size: int
) -> EnvGroupBuilder:
    problem = make_problem(
        rng, num_digits=cfg.num_digits, num_operands=cfg.num_operands, operators=cfg.operators
    )
    env_thunk = partial(make_calculator_env, renderer, problem, cfg.max_tool_calls, cfg.max_trajectory_tokens)
    return ProblemGroupBuilder(env_thunk, group_size, "calculator")


@dataclass(frozen=True, kw_only=True)
class CalculatorDatasetBuilder(EnvDatasetBuilder):
    renderer_name: str | None = "qwen2_5"  # needs a renderer with a tool-call format
    num_digits: int = 3
    num_operands: int = 2
    operators: str = "*"
    max_tool_calls: int = 3
    max_trajectory_tokens: int | None = None
    n_batches: int = 100
    n_test_problems: int = 64

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        return seeded_train_test(
            partial(_calculator_group, self, self.get_renderer()),
            seed=self.seed,
            n_batches=self.n_batches,
            groups_per_batch=self.groups_per_batch,
            group_size=self.group_size,
            n_test_problems=self.n_test_problems,
        )
