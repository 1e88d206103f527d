"""The renderer interface: messages <-> tokens and per-token loss weights.

A renderer turns a conversation into the exact token sequence a chat model was trained on, with a
weight per token (which tokens the loss trains), and turns sampled tokens back into a message.
Each message renders as a *header* (role markers; never trained except with `ALL_TOKENS`) and an
*output* (the content plus the end-of-turn token, which is what the model must learn to produce).
A generation prompt is `BOS + sum(header_i + output_i) + generation suffix (+ prefill)`, so the
observation part of a supervised example is, token for token, the prompt the sampler sees.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypedDict

import numpy as np

from jaxcook.types import ModelInput


class TextPart(TypedDict):
    type: Literal["text"]
    text: str


class ThinkingPart(TypedDict):
    type: Literal["thinking"]
    thinking: str


ContentPart = TextPart | ThinkingPart


@dataclass(frozen=True)
class FunctionBody:
    name: str
    arguments: str  # JSON text of an object, as in the OpenAI API


@dataclass(frozen=True)
class ToolCall:
    function: FunctionBody
    id: str | None = None
    type: Literal["function"] = "function"


@dataclass(frozen=True)
class UnparsedToolCall:
    """A tool call the model tried to make but wrote wrongly (bad JSON, missing fields)."""

    raw_text: str
    error: str


class ToolSpec(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON Schema of the arguments


class Message(TypedDict, total=False):
    role: str
    content: str | list[ContentPart]
    tool_calls: list[ToolCall]
    unparsed_tool_calls: list[UnparsedToolCall]
    trainable: bool  # only with TrainOnWhat.CUSTOMIZED
    tool_call_id: str
    name: str


class TrainOnWhat(StrEnum):
    LAST_ASSISTANT_MESSAGE = "last_assistant_message"
    LAST_ASSISTANT_TURN = "last_assistant_turn"  # every assistant message after the last user one
    ALL_ASSISTANT_MESSAGES = "all_assistant_messages"
    ALL_MESSAGES = "all_messages"
    ALL_TOKENS = "all_tokens"  # headers and BOS too
    ALL_USER_AND_SYSTEM_MESSAGES = "all_user_and_system_messages"
    CUSTOMIZED = "customized"  # per-message `trainable`


class ParseTermination(StrEnum):
    """How a sampled response ended: its stop token, the tokenizer's EOS, or neither (cut off)."""

    STOP_SEQUENCE = "stop_sequence"
    EOS = "eos"
    MALFORMED = "malformed"

    @property
    def is_clean(self) -> bool:
        return self is not ParseTermination.MALFORMED

    @property
    def is_stop_sequence(self) -> bool:
        return self is ParseTermination.STOP_SEQUENCE


class RendererError(ValueError):
    pass


@dataclass(frozen=True)
class RenderContext:
    """Where a message sits in its conversation (`idx == len(messages)` for the generation suffix)."""

    idx: int
    messages: Sequence[Message]

    @property
    def is_last(self) -> bool:
        return self.idx == len(self.messages) - 1

    @property
    def prev(self) -> Message | None:
        return self.messages[self.idx - 1] if self.idx > 0 else None

    @property
    def next(self) -> Message | None:
        return self.messages[self.idx + 1] if self.idx + 1 < len(self.messages) else None

    @property
    def last_user_index(self) -> int:
        return last_user_index(self.messages)

    @property
    def after_last_user(self) -> bool:
        """True for the turn being produced: every message after the last user message."""
        return self.idx > self.last_user_index


@dataclass(frozen=True)
class RenderedMessage:
    header: list[int] = field(default_factory=list)
    output: list[int] = field(default_factory=list)
    # Only RoleColon: text appended after the *last* message of a supervised example so the model
    # learns to write its stop string.
    stop_overlap: list[int] = field(default_factory=list)


def last_user_index(messages: Sequence[Message]) -> int:
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)


def get_text_content(message: Message) -> str:
    """The text of a message, thinking parts dropped."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(p["text"] for p in content if p["type"] == "text")


def get_thinking_content(message: Message) -> str:
    content = message.get("content", "")
    if isinstance(content, str):
        return ""
    return "".join(p["thinking"] for p in content if p["type"] == "thinking")


def has_thinking(message: Message) -> bool:
    content = message.get("content", "")
    return not isinstance(content, str) and any(p["type"] == "thinking" for p in content)


def remove_thinking(message: Message) -> Message:
    content = message.get("content", "")
    if isinstance(content, str):
        return message
    return {**message, "content": [p for p in content if p["type"] != "thinking"]}


def make_content(text: str, thinking: str | None) -> str | list[ContentPart]:
    """Parsed message content: a plain string, or parts when there was a thinking block."""
    if thinking is None:
        return text
    parts: list[ContentPart] = [ThinkingPart(type="thinking", thinking=thinking)]
    if text:
        parts.append(TextPart(type="text", text=text))
    return parts


def tool_call_arguments(call: ToolCall, where: str) -> dict[str, Any]:
    """The arguments of a tool call as an object; bad JSON is the caller's error."""
    try:
        args = json.loads(call.function.arguments)
    except json.JSONDecodeError as e:
        raise RendererError(f"{where}: tool call {call.function.name!r} arguments are not JSON: {e}") from e
    if not isinstance(args, dict):
        raise RendererError(f"{where}: tool call {call.function.name!r} arguments must be a JSON object")
    return args


def split_at_stop(
    tokens: Sequence[int], stop_ids: Sequence[int], eos_id: int | None = None
) -> tuple[list[int], ParseTermination]:
    """Cut a sampled response at its stop token: (tokens before it, how the response ended).

    A response is one turn: a stop token anywhere but at the end means the caller passed more than
    one response, which is an error rather than something to guess around.
    """
    tokens = list(tokens)
    for i, t in enumerate(tokens):
        if t in stop_ids or t == eos_id:
            if i != len(tokens) - 1:
                raise RendererError(
                    f"parse_response got {len(tokens) - i - 1} tokens after the stop token {t} at {i}; "
                    "pass one sampled response ending at its first stop token"
                )
            term = ParseTermination.STOP_SEQUENCE if t in stop_ids else ParseTermination.EOS
            return tokens[:i], term
    return tokens, ParseTermination.MALFORMED


class Renderer(ABC):
    """Messages -> (tokens, weights) for training and prompts; sampled tokens -> message."""

    name: str = "renderer"
    # Multi-turn prompts extend each other (prompt_t + response_t is a prefix of prompt_t+1), so a
    # multi-turn trajectory trains as one datum. Renderers that rewrite history (strip thinking) lose it.
    has_extension_property: bool = True
    disables_thinking: bool = False  # the generation prompt prefills an empty thinking block

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @abstractmethod
    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage: ...

    @abstractmethod
    def get_stop_sequences(self) -> list[int] | list[str]: ...

    @abstractmethod
    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]: ...

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)

    def bos_tokens(self) -> list[int]:
        return []

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        """Check roles and add what the format implies (e.g. a default system prompt)."""
        return list(messages)

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[int]:
        """What follows the history when the model is asked to write a message of `role`."""
        return self.render_message({"role": role, "content": ""}, ctx).header

    def _render_all(self, messages: Sequence[Message]) -> list[RenderedMessage]:
        return [self.render_message(m, RenderContext(i, messages)) for i, m in enumerate(messages)]

    def build_generation_prompt(
        self, messages: Sequence[Message], role: str = "assistant", prefill: str | None = None
    ) -> ModelInput:
        messages = self.prepare(messages)
        tokens = self.bos_tokens()
        for r in self._render_all(messages):
            tokens += r.header + r.output
        tokens += self.generation_suffix(role, RenderContext(len(messages), messages))
        if prefill:
            tokens += self.encode(prefill)
        return ModelInput.from_ints(tokens)

    def build_supervised_example(
        self,
        messages: Sequence[Message],
        train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_MESSAGE,
    ) -> tuple[ModelInput, np.ndarray]:
        """Tokens of the whole conversation and float32 weights over the same (unshifted) tokens."""
        train_on_what = TrainOnWhat(train_on_what)
        messages = self.prepare(messages)
        trained = _trained_messages(messages, train_on_what)
        all_tokens = train_on_what is TrainOnWhat.ALL_TOKENS
        bos = self.bos_tokens()
        tokens, weights = list(bos), [float(all_tokens)] * len(bos)
        rendered = self._render_all(messages)
        for i, r in enumerate(rendered):
            w = float(trained[i])
            overlap = r.stop_overlap if i == len(messages) - 1 else []
            tokens += r.header + r.output + overlap
            weights += [float(all_tokens)] * len(r.header) + [w] * (len(r.output) + len(overlap))
        weights_T = np.asarray(weights, np.float32)
        if train_on_what in (TrainOnWhat.LAST_ASSISTANT_MESSAGE, TrainOnWhat.LAST_ASSISTANT_TURN):
            self._mask_generation_prompt(messages, trained, tokens, weights_T)
        if train_on_what is TrainOnWhat.ALL_ASSISTANT_MESSAGES and not self.has_extension_property:
            warnings.warn(
                f"{self.name} rewrites history (no extension property): ALL_ASSISTANT_MESSAGES trains "
                "early turns in a context the model never sees at sampling time",
                stacklevel=2,
            )
        return ModelInput.from_ints(tokens), weights_T

    def _mask_generation_prompt(self, messages, trained, tokens, weights_T) -> None:
        """Withhold loss from whatever the generation prompt already contains (e.g. a prefill)."""
        first = trained.index(True)
        role = messages[first]["role"]
        prompt = self.build_generation_prompt(messages[:first], role=role).to_ints()
        if tokens[: len(prompt)] == prompt:
            weights_T[: len(prompt)] = 0.0
        elif self.disables_thinking:
            raise RendererError(
                f"{self.name}: message {first} does not start with the reasoning-off generation prompt "
                "(did it reason?); a reasoning-off renderer refuses a turn that reasoned"
            )

    def build_supervised_examples(
        self,
        messages: Sequence[Message],
        train_on_what: TrainOnWhat = TrainOnWhat.LAST_ASSISTANT_TURN,
    ) -> list[tuple[ModelInput, np.ndarray]]:
        """One example when prompts extend each other, else one per trained assistant message."""
        train_on_what = TrainOnWhat(train_on_what)
        if self.has_extension_property:
            return [self.build_supervised_example(messages, train_on_what)]
        if train_on_what not in (
            TrainOnWhat.LAST_ASSISTANT_MESSAGE,
            TrainOnWhat.LAST_ASSISTANT_TURN,
            TrainOnWhat.ALL_ASSISTANT_MESSAGES,
        ):
            raise RendererError(
                f"{self.name} has no extension property; build_supervised_examples splits a "
                f"conversation per assistant message, which {train_on_what.value} cannot express"
            )
        prepared = self.prepare(messages)
        trained = _trained_messages(prepared, train_on_what)
        offset = len(prepared) - len(messages)  # messages that prepare() inserted in front
        return [
            self.build_supervised_example(messages[: i - offset + 1], TrainOnWhat.LAST_ASSISTANT_MESSAGE)
            for i, t in enumerate(trained)
            if t
        ]

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str = ""
    ) -> list[Message]:
        raise RendererError(f"renderer {self.name!r} has no tool-calling format")

    def to_openai_message(self, message: Message) -> dict[str, Any]:
        """The message as the OpenAI / HF `apply_chat_template` dict (thinking dropped by default)."""
        out: dict[str, Any] = {"role": message["role"], "content": get_text_content(message)}
        if message.get("tool_calls"):
            out["tool_calls"] = [
                {
                    "type": "function",
                    **({"id": c.id} if c.id is not None else {}),
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in message["tool_calls"]
            ]
        for key in ("tool_call_id", "name"):
            if key in message:
                out[key] = message[key]
        return out


def check_roles(name: str, messages: Sequence[Message], allowed: Sequence[str]) -> None:
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in allowed:
            raise RendererError(f"{name}: message {i} has unknown role {role!r}; expected one of {allowed}")


def _trained_messages(messages: Sequence[Message], how: TrainOnWhat) -> list[bool]:
    roles = [m.get("role") for m in messages]
    has_flag = [("trainable" in m) for m in messages]
    if how is TrainOnWhat.CUSTOMIZED:
        missing = [i for i, f in enumerate(has_flag) if not f]
        if missing:
            raise RendererError(f"CUSTOMIZED needs 'trainable' on every message; missing on {missing}")
        return [bool(m["trainable"]) for m in messages]
    if any(has_flag):
        raise RendererError(
            f"message {has_flag.index(True)} sets 'trainable', which only TrainOnWhat.CUSTOMIZED reads"
        )
    if how is TrainOnWhat.LAST_ASSISTANT_MESSAGE:
        if not roles or roles[-1] != "assistant":
            raise RendererError(
                f"LAST_ASSISTANT_MESSAGE needs the last message to be an assistant one, got {roles[-1:]}"
            )
        return [i == len(roles) - 1 for i in range(len(roles))]
    if how is TrainOnWhat.LAST_ASSISTANT_TURN:
        last_user = last_user_index(messages)
        trained = [r == "assistant" and i > last_user for i, r in enumerate(roles)]
        if not any(trained):
            raise RendererError("LAST_ASSISTANT_TURN: no assistant message after the last user message")
        return trained
    if how is TrainOnWhat.ALL_ASSISTANT_MESSAGES:
        return [r == "assistant" for r in roles]
    if how in (TrainOnWhat.ALL_MESSAGES, TrainOnWhat.ALL_TOKENS):
        return [True] * len(roles)
    if how is TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES:
        return [r in ("user", "system") for r in roles]
    raise AssertionError(how)
