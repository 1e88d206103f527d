"""DeepSeek V3.1, non-thinking (`deepseekv3`, the default) and thinking (`deepseekv3_thinking`).

    <｜begin▁of▁sentence｜>{system}<｜User｜>{u}<｜Assistant｜></think>{a}<｜end▁of▁sentence｜>

* The system prompt sits right after BOS, with no role token; only a first system message is
  accepted (the template would silently hoist later ones to the top).
* An assistant message following a user one opens with `<｜Assistant｜></think>` (non-thinking);
  one following tool outputs has no role token at all, and neither does the prompt after a tool.
* Tool calls: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>{name}<｜tool▁sep｜>{args}<｜tool▁call▁end｜>
  ...<｜tool▁calls▁end｜>`; tool results `<｜tool▁output▁begin｜>{c}<｜tool▁output▁end｜>`.
* Thinking: the prompt ends `<｜Assistant｜><think>` and the produced turn is `{reasoning}</think>
  {text}`. Deliberate difference: the HF template has no way to write a trained turn's reasoning
  (it always writes `</think>` and drops it), so a thinking supervised example differs from it
  after the prompt. History turns lose their reasoning, as in the template, so the thinking
  renderer has no extension property; the non-thinking one drops reasoning everywhere and has it.
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

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
OUT_BEGIN, OUT_END = "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"
_CALL_RE = re.compile(re.escape(CALL_BEGIN) + "(.*?)" + re.escape(CALL_END), re.DOTALL)


class DeepSeekV3Renderer(Renderer):
    roles = ("system", "user", "assistant", "tool")

    def __init__(self, tokenizer, *, name: str = "deepseekv3", thinking: bool = False):
        super().__init__(tokenizer)
        self.name = name
        self.thinking = thinking
        self.has_extension_property = not thinking
        (self._bos,) = self.encode(BOS)
        (self._eos,) = self.encode(EOS)

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages[1:], start=1):
            if m["role"] == "system":
                raise RendererError(f"{self.name}: message {i} is a system message; only the first may be")
        return list(messages)

    def bos_tokens(self) -> list[int]:
        return [self._bos]

    def _produces_thinking(self, ctx: RenderContext) -> bool:
        return self.thinking and ctx.after_last_user

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        role, text = message["role"], get_text_content(message)
        if role == "system":
            return RenderedMessage([], self.encode(text))
        if role == "user":
            return RenderedMessage(self.encode(USER), self.encode(text))
        if role == "tool":
            return RenderedMessage([], self.encode(OUT_BEGIN + text + OUT_END))
        calls = message.get("tool_calls", [])
        # V3.1 calls tools in non-thinking mode only: a tool-call turn is written as the template does.
        reasons = self._produces_thinking(ctx) and not calls
        header = ""
        if ctx.prev is not None and ctx.prev["role"] == "user":
            header = ASSISTANT + ("<think>" if reasons else "</think>")
            if reasons:
                text = get_thinking_content(message) + "</think>" + text
        if calls:
            where = f"{self.name}: message {ctx.idx}"
            for c in calls:
                tool_call_arguments(c, where)
            text += CALLS_BEGIN
            text += "".join(
                f"{CALL_BEGIN}{c.function.name}{SEP}{c.function.arguments}{CALL_END}" for c in calls
            )
            text += CALLS_END
        return RenderedMessage(self.encode(header), self.encode(text) + [self._eos])

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[int]:
        if role != "assistant":
            raise RendererError(f"{self.name}: can only prompt for an assistant message, not {role!r}")
        prev = ctx.prev
        if prev is None or prev["role"] != "user":
            return []  # after tool outputs (or nothing) the model continues directly
        return self.encode(ASSISTANT + ("<think>" if self._produces_thinking(ctx) else "</think>"))

    def get_stop_sequences(self) -> list[int]:
        return [self._eos]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._eos])
        text = self.decode(body)
        thinking = None
        if self.thinking and "</think>" in text:
            thinking, text = text.split("</think>", 1)
            thinking = thinking.removeprefix("<think>")
        message: Message = {"role": "assistant"}
        start = text.find(CALLS_BEGIN)
        if start >= 0:
            section, text = text[start:], text[:start]
            calls, unparsed = [], []
            for raw in _CALL_RE.findall(section):
                call = _parse_call(raw)
                (calls if isinstance(call, ToolCall) else unparsed).append(call)
            if not section.endswith(CALLS_END) or section.count(CALL_BEGIN) != section.count(CALL_END):
                unparsed.append(UnparsedToolCall(section, f"tool-call section not closed by {CALLS_END}"))
            if calls:
                message["tool_calls"] = calls
            if unparsed:
                message["unparsed_tool_calls"] = unparsed
        message["content"] = make_content(text, thinking)
        return message, term

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str = ""
    ) -> list[Message]:
        # The layout of DeepSeek-V3.1's model card (not checkable offline: the template has no tools).
        decls = "".join(
            f"### {t['name']}\nDescription: {t['description']}\n\n"
            f"Parameters: {json.dumps(t['parameters'], ensure_ascii=False)}\n\n"
            for t in tools
        )
        body = (
            "## Tools\nYou have access to the following tools:\n\n"
            + decls
            + "IMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
            f"{CALLS_BEGIN}{CALL_BEGIN}tool_call_name{SEP}tool_call_arguments{CALL_END}"
            f"{{additional_tool_calls}}{CALLS_END}\n\n"
            "Where:\n- `tool_call_name` must be an exact match to one of the available tools\n"
            "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"
            "- For multiple tool calls, chain them directly without separators or spaces"
        )
        return [{"role": "system", "content": f"{system_prompt}\n\n{body}" if system_prompt else body}]


def _parse_call(raw: str) -> ToolCall | UnparsedToolCall:
    if SEP not in raw:
        return UnparsedToolCall(raw, f"tool call without {SEP}")
    name, args = raw.split(SEP, 1)
    try:
        if not isinstance(json.loads(args), dict):
            raise ValueError("arguments must be a JSON object")
    except ValueError as e:
        return UnparsedToolCall(raw, f"{type(e).__name__}: {e}")
    return ToolCall(FunctionBody(name, args))
