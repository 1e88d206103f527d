"""Qwen3 (thinking, reasoning-off, Instruct-2507) and Qwen2.5: ChatML with `<think>` and tool calls.

    <|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n<think>\n{r}\n</think>\n\n{a}<|im_end|>

* The "\n" between turns belongs to the next header (a trained turn ends on `<|im_end|>`).
* The turn being produced (assistant messages after the last user message) is framed like the HF
  template: `<think>\n{reasoning}\n</think>\n\n{text}`, an empty block when the final message has
  no reasoning. Earlier assistant turns lose their reasoning (`strip_thinking_from_history=True`,
  as the template does), which breaks the extension property; with `False` every assistant turn
  keeps a (possibly empty) block, so prompts extend each other.
* Tool results render as a user turn of `<tool_response>` blocks (consecutive ones share it);
  tool calls as `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`.
* `qwen3_disable_thinking` prefills the empty block in the prompt (HF `enable_thinking=False`);
  `qwen3_instruct` (2507) and `qwen2_5` have no thinking at all; `qwen2_5` also inserts Qwen's
  default system prompt when the conversation has none, as its template does.
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
    has_thinking,
    make_content,
    split_at_stop,
    tool_call_arguments,
)

QWEN2_5_DEFAULT_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)
_TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


class Qwen3Renderer(Renderer):
    roles = ("system", "user", "assistant", "tool")

    def __init__(
        self,
        tokenizer,
        *,
        name: str = "qwen3",
        thinking: bool = True,
        disable_thinking: bool = False,
        strip_thinking_from_history: bool = True,
        default_system_prompt: str | None = None,
    ):
        super().__init__(tokenizer)
        self.name = name
        self.thinking = thinking  # frames the produced turn with <think> blocks
        self.disables_thinking = disable_thinking
        self.strip_thinking_from_history = strip_thinking_from_history
        self.has_extension_property = not (thinking and strip_thinking_from_history)
        self.default_system_prompt = default_system_prompt
        (self._im_end,) = self.encode("<|im_end|>")

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        if not self.thinking:
            for i, m in enumerate(messages):
                if has_thinking(m):
                    raise RendererError(
                        f"{self.name}: message {i} has thinking, which this model never writes"
                    )
        messages = list(messages)
        if self.default_system_prompt is not None and messages and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.default_system_prompt})
        return messages

    def _think_block(self, message: Message, ctx: RenderContext) -> str | None:
        """The `<think>` block this assistant message renders with, or None for none."""
        if not self.thinking:
            return None
        reasoning = get_thinking_content(message)
        if not self.strip_thinking_from_history:
            return reasoning
        if ctx.after_last_user and (ctx.is_last or reasoning):
            return reasoning
        return None

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        role = message["role"]
        sep = "\n" if ctx.idx > 0 else ""
        if role == "tool":
            prev, nxt = ctx.prev, ctx.next
            header = "" if prev is not None and prev["role"] == "tool" else f"{sep}<|im_start|>user"
            body = f"\n<tool_response>\n{get_text_content(message)}\n</tool_response>"
            end = [] if nxt is not None and nxt["role"] == "tool" else [self._im_end]
            return RenderedMessage(self.encode(header), self.encode(body) + end)
        header = self.encode(f"{sep}<|im_start|>{role}\n")
        text = get_text_content(message)
        if role == "assistant":
            calls = self._format_tool_calls(message, text, ctx)
            reasoning = self._think_block(message, ctx)
            if reasoning is not None:
                text = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{text.lstrip(chr(10))}"
            text += calls
        return RenderedMessage(header, self.encode(text) + [self._im_end])

    def _format_tool_calls(self, message: Message, text: str, ctx: RenderContext) -> str:
        out = ""
        for i, call in enumerate(message.get("tool_calls", [])):
            args = self._arguments_text(call, f"{self.name}: message {ctx.idx}")
            sep = "\n" if (i > 0 or text) else ""
            out += f'{sep}<tool_call>\n{{"name": "{call.function.name}", "arguments": {args}}}\n</tool_call>'
        return out

    def _arguments_text(self, call: ToolCall, where: str) -> str:
        tool_call_arguments(call, where)  # must be a JSON object
        return call.function.arguments  # the template writes a string argument verbatim

    def generation_suffix(self, role: str, ctx: RenderContext) -> list[int]:
        suffix = self.encode(f"{chr(10) if ctx.idx > 0 else ''}<|im_start|>{role}\n")
        if self.disables_thinking and role == "assistant":
            suffix += self.encode("<think>\n\n</think>\n\n")
        return suffix

    def get_stop_sequences(self) -> list[int]:
        return [self._im_end]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._im_end], self.tokenizer.eos_token_id)
        text = self.decode(body)
        if self.disables_thinking and "</think>" not in text:
            text = "<think>\n\n</think>\n\n" + text  # the prompt prefilled it
        thinking = None
        if self.thinking and "</think>" in text:
            before, text = text.split("</think>", 1)
            thinking = before.split("<think>", 1)[-1].strip("\n") or None
            text = text.lstrip("\n")
        message: Message = {"role": "assistant"}
        calls, unparsed = [], []
        first = text.find("<tool_call>")
        if first >= 0:
            for match in _TOOL_CALL_RE.finditer(text, first):
                if not match.group(0).endswith("</tool_call>"):
                    unparsed.append(UnparsedToolCall(match.group(0), "unterminated <tool_call>"))
                    continue
                call = _parse_tool_call(match.group(1))
                (calls if isinstance(call, ToolCall) else unparsed).append(call)
            text = text[:first].removesuffix("\n")
        message["content"] = make_content(text, thinking)
        if calls:
            message["tool_calls"] = calls
        if unparsed:
            message["unparsed_tool_calls"] = unparsed
        return message, term

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str = ""
    ) -> list[Message]:
        system_prompt = system_prompt or (self.default_system_prompt or "")
        decls = "".join("\n" + json.dumps(_openai_tool(t), ensure_ascii=False) for t in tools)
        lead = system_prompt + "\n\n" if system_prompt else ""
        return [{"role": "system", "content": lead + _TOOLS_INTRO + decls + _TOOLS_OUTRO}]

    def to_openai_message(self, message: Message) -> dict:
        out = super().to_openai_message(message)
        if has_thinking(message):
            out["reasoning_content"] = get_thinking_content(message)
        return out


class Qwen2_5Renderer(Qwen3Renderer):
    """Qwen2.5: no thinking, and its template serialises tool-call arguments with `tojson`."""

    def _arguments_text(self, call: ToolCall, where: str) -> str:
        return json.dumps(tool_call_arguments(call, where), ensure_ascii=False)

    def to_openai_message(self, message: Message) -> dict:
        out = super().to_openai_message(message)
        for call in out.get("tool_calls", []):  # the template wants an object, not JSON text
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        return out


def _openai_tool(tool: ToolSpec) -> dict:
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool["description"],
            "parameters": tool["parameters"],
        },
    }


def _parse_tool_call(raw: str) -> ToolCall | UnparsedToolCall:
    try:
        obj = json.loads(raw.strip())
        name, args = obj["name"], obj["arguments"]
        if not isinstance(name, str) or not isinstance(args, dict):
            raise TypeError("'name' must be a string and 'arguments' an object")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return UnparsedToolCall(raw_text=raw, error=f"{type(e).__name__}: {e}")
    return ToolCall(FunctionBody(name, json.dumps(args, ensure_ascii=False)))
