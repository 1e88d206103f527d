"""Kimi K2 (Thinking): `<|im_{role}|>{name}<|im_middle|>{content}<|im_end|>`, no separators.

    <|im_system|>system<|im_middle|>{s}<|im_end|><|im_user|>user<|im_middle|>{u}<|im_end|>
    <|im_assistant|>assistant<|im_middle|><think>{r}</think>{a}<|im_end|>

* Kimi's default system prompt is inserted when the conversation has none (after a `tool_declare`
  message, which carries the tools as compact JSON), as the template does.
* Assistant turns before the last user message render an empty `<think></think>` (reasoning
  stripped, as in the template): no extension property. The produced turn keeps its reasoning.
  Deliberate difference: the template also empties the last final answer's reasoning, which would
  make reasoning untrainable; tests compare that turn against the template's prompt instead.
* Tool calls: `<|tool_calls_section_begin|><|tool_call_begin|>{id}<|tool_call_argument_begin|>
  {args}<|tool_call_end|>...<|tool_calls_section_end|>`, ids `functions.{name}:{idx}`; tool results
  `<|im_system|>{name}<|im_middle|>## Return of {tool_call_id}\n{c}<|im_end|>` (tool_call_id required).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from jaxcook.renderers.base import (
    FunctionBody,
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    RendererError,
    ToolCall,
    ToolSpec,
    UnparsedToolCall,
    check_roles,
    get_text_content,
    get_thinking_content,
    make_content,
    split_at_stop,
    tool_call_arguments,
)

KIMI_DEFAULT_SYSTEM_PROMPT = "You are Kimi, an AI assistant created by Moonshot AI."
SECTION_BEGIN, SECTION_END = "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>"
CALL_BEGIN, ARG_BEGIN, CALL_END = "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>"
_CALL_RE = re.compile(
    re.escape(CALL_BEGIN) + r"(.*?)" + re.escape(ARG_BEGIN) + r"(.*?)" + re.escape(CALL_END), re.S
)
_ID_RE = re.compile(r"functions\.(.+):\d+")


class KimiK2Renderer(Renderer):
    name = "kimi_k2"
    roles = ("system", "user", "assistant", "tool", "tool_declare")
    has_extension_property = False
    thinking = True  # assistant turns framed by <think>...</think> (False: K2 Instruct)

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        (self._im_end,) = self.encode("<|im_end|>")

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages):
            if m["role"] == "tool" and not m.get("tool_call_id"):
                raise RendererError(
                    f"{self.name}: tool message {i} needs 'tool_call_id' (its '## Return of' line)"
                )
        messages = list(messages)
        start = 1 if messages and messages[0]["role"] == "tool_declare" else 0
        if len(messages) > start and messages[start]["role"] != "system" or len(messages) == start:
            messages.insert(start, {"role": "system", "content": KIMI_DEFAULT_SYSTEM_PROMPT})
        return messages

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        role, text = message["role"], get_text_content(message)
        kind = {"user": "user", "assistant": "assistant"}.get(role, "system")
        header = self.encode(f"<|im_{kind}|>{message.get('name') or role}<|im_middle|>")
        if role == "tool":
            text = f"## Return of {message['tool_call_id']}\n{text}"
        elif role == "assistant":
            if self.thinking:
                reasoning = get_thinking_content(message) if ctx.after_last_user else ""
                text = f"<think>{reasoning}</think>{text}"
            calls = message.get("tool_calls", [])
            if calls:
                text += SECTION_BEGIN
                for i, call in enumerate(calls):
                    tool_call_arguments(call, f"{self.name}: message {ctx.idx}")
                    text += f"{CALL_BEGIN}{_call_id(call, i)}{ARG_BEGIN}{call.function.arguments}{CALL_END}"
                text += SECTION_END
        return RenderedMessage(header, self.encode(text) + [self._im_end])

    def get_stop_sequences(self) -> list[int]:
        return [self._im_end]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._im_end])
        text, thinking = self.decode(body), None
        if self.thinking and "</think>" in text:
            before, text = text.split("</think>", 1)
            thinking = before.removeprefix("<think>") or None
        message: Message = {"role": "assistant"}
        start = text.find(SECTION_BEGIN)
        if start >= 0:
            section, text = text[start:], text[:start]
            calls, unparsed = [], []
            for call_id, args in _CALL_RE.findall(section):
                call = _parse_call(call_id, args)
                (calls if isinstance(call, ToolCall) else unparsed).append(call)
            if not section.endswith(SECTION_END) or section.count(CALL_BEGIN) != section.count(CALL_END):
                unparsed.append(UnparsedToolCall(section, f"tool-call section not closed by {SECTION_END}"))
            if calls:
                message["tool_calls"] = calls
            if unparsed:
                message["unparsed_tool_calls"] = unparsed
        message["content"] = make_content(text, thinking)
        return message, term

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str = ""
    ) -> list[Message]:
        decls = [{"type": "function", "function": dict(t)} for t in tools]
        prefix: list[Message] = [
            {"role": "tool_declare", "content": json.dumps(decls, separators=(",", ":"), ensure_ascii=False)}
        ]
        if system_prompt:
            prefix.append({"role": "system", "content": system_prompt})
        return prefix

    def to_openai_message(self, message: Message) -> dict:
        out = super().to_openai_message(message)
        if self.thinking and get_thinking_content(message):
            out["reasoning_content"] = get_thinking_content(message)
        for i, (call, raw) in enumerate(zip(out.get("tool_calls", []), message.get("tool_calls", []))):
            call["id"] = _call_id(raw, i)
        return out


def _call_id(call: ToolCall, index: int) -> str:
    return call.id if call.id is not None else f"functions.{call.function.name}:{index}"


def _parse_call(call_id: str, args: str) -> ToolCall | UnparsedToolCall:
    match = _ID_RE.fullmatch(call_id.strip())
    if match is None:
        return UnparsedToolCall(call_id + args, f"tool call id {call_id!r} is not 'functions.NAME:INDEX'")
    try:
        if not isinstance(json.loads(args), dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as e:
        return UnparsedToolCall(call_id + args, f"{type(e).__name__}: {e}")
    return ToolCall(FunctionBody(match.group(1), args), id=call_id.strip())
