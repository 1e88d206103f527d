"""GPT-OSS in OpenAI's Harmony format: `<|start|>{role}<|channel|>{ch}<|message|>{c}<|end|>`.

* Variants: `gpt_oss_{low,medium,high}_reasoning` open with Harmony's system message (model
  identity, knowledge cutoff, today's date, `Reasoning: {effort}`, valid channels), as the HF
  template does; `gpt_oss_no_sysprompt` omits it (deliberate; tests strip it from the template).
* Our `system` role is Harmony's developer message, `# Instructions\n\n{c}\n\n`; a `developer`
  message is written verbatim (that is how tools are declared, see
  `create_conversation_prefix_with_tools`).
* The produced turn: thinking -> `<|channel|>analysis<|message|>{t}<|end|><|start|>assistant`,
  then `<|channel|>final<|message|>{c}<|return|>`; a tool call is
  ` to=functions.{name}<|channel|>commentary json<|message|>{args}<|call|>` (one per message).
  Earlier turns end `<|end|>` and lose their analysis, as in the template: no extension property.
* Tool results: `<|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{c}<|end|>`;
  the message must carry the tool `name`. Deliberate: content is written raw, as Harmony does,
  where the HF template writes it JSON-quoted (`|tojson`).
"""

from __future__ import annotations

import datetime
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

_SYSTEM = "harmony_system"  # internal role of the Harmony system message the renderer inserts
_TOOLS_MARK = "namespace functions {"
# One Harmony message after `<|start|>assistant`; the recipient may come before or after the channel.
_SEGMENT_RE = re.compile(
    r"(?: to=([^\s<]+))?<\|channel\|>(\w+)(?: to=([^\s<]+))?[^<]*(?:<\|constrain\|>[^<]*)?"
    r"<\|message\|>(.*?)(?:<\|end\|>|$)",
    re.DOTALL,
)


class GptOssRenderer(Renderer):
    roles = ("system", "developer", "user", "assistant", "tool")
    has_extension_property = False

    def __init__(
        self, tokenizer, *, name: str, reasoning_effort: str | None, current_date: str | None = None
    ):
        super().__init__(tokenizer)
        self.name = name
        self.reasoning_effort = reasoning_effort
        self.current_date = current_date or datetime.date.today().isoformat()
        self._return, self._call, self._end = (
            self.encode(t)[0] for t in ("<|return|>", "<|call|>", "<|end|>")
        )

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, [m for m in messages if m.get("role") != _SYSTEM], self.roles)
        messages = [m for m in messages if m.get("role") != _SYSTEM]
        for i, m in enumerate(messages):
            if i > 0 and m["role"] in ("system", "developer"):
                raise RendererError(
                    f"{self.name}: message {i} is a {m['role']} message; only the first may be"
                )
            if m["role"] == "tool" and not m.get("name"):
                raise RendererError(f"{self.name}: tool message {i} needs 'name' (the function it answers)")
            if len(m.get("tool_calls", [])) > 1:
                raise RendererError(
                    f"{self.name}: message {i} has several tool calls; Harmony takes one per message"
                )
        if self.reasoning_effort is None:
            return messages
        tools = (
            bool(messages)
            and messages[0]["role"] == "developer"
            and _TOOLS_MARK in get_text_content(messages[0])
        )
        system = (
            "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
            f"Current date: {self.current_date}\n\nReasoning: {self.reasoning_effort}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message."
        )
        if tools:
            system += "\nCalls to these tools must go to the commentary channel: 'functions'."
        return [{"role": _SYSTEM, "content": system}, *messages]

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        role, text = message["role"], get_text_content(message)
        if role == _SYSTEM:
            return RenderedMessage(self.encode("<|start|>system"), self.encode(f"<|message|>{text}<|end|>"))
        if role in ("system", "developer"):
            body = f"# Instructions\n\n{text}\n\n" if role == "system" else text
            return RenderedMessage(
                self.encode("<|start|>developer"), self.encode(f"<|message|>{body}<|end|>")
            )
        if role == "user":
            return RenderedMessage(self.encode("<|start|>user"), self.encode(f"<|message|>{text}<|end|>"))
        if role == "tool":
            header = f"<|start|>functions.{message['name']} to=assistant"
            return RenderedMessage(
                self.encode(header), self.encode(f"<|channel|>commentary<|message|>{text}<|end|>")
            )
        out, thinking = "", get_thinking_content(message)
        calls = message.get("tool_calls", [])
        if calls:
            later_final = any(
                m["role"] == "assistant" and not m.get("tool_calls") for m in ctx.messages[ctx.idx + 1 :]
            )
            analysis = thinking or text
            if analysis and not later_final:
                out += f"<|channel|>analysis<|message|>{analysis}<|end|><|start|>assistant"
            args = json.dumps(
                tool_call_arguments(calls[0], f"{self.name}: message {ctx.idx}"), ensure_ascii=False
            )
            out += f" to=functions.{calls[0].function.name}<|channel|>commentary json<|message|>{args}"
            return RenderedMessage(self.encode("<|start|>assistant"), self.encode(out) + [self._call])
        if thinking and ctx.is_last:
            out += f"<|channel|>analysis<|message|>{thinking}<|end|><|start|>assistant"
        out += f"<|channel|>final<|message|>{text}"
        end = self._return if ctx.is_last else self._end
        return RenderedMessage(self.encode("<|start|>assistant"), self.encode(out) + [end])

    def get_stop_sequences(self) -> list[int]:
        return [self._return, self._call]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._return, self._call])
        thinking, text, calls, unparsed = [], [], [], []
        for segment in self.decode(body).split("<|start|>assistant"):
            match = _SEGMENT_RE.match(segment)
            if match is None:
                if segment:
                    text.append(segment)
                continue
            before, channel, after, content = match.groups()
            recipient = before or after
            if recipient and recipient.startswith("functions."):
                try:
                    args = json.loads(content)
                    if not isinstance(args, dict):
                        raise ValueError("arguments must be a JSON object")
                    calls.append(
                        ToolCall(FunctionBody(recipient.removeprefix("functions."), json.dumps(args)))
                    )
                except ValueError as e:
                    unparsed.append(UnparsedToolCall(segment, f"{type(e).__name__}: {e}"))
            elif channel == "analysis":
                thinking.append(content)
            else:
                text.append(content)
        message: Message = {
            "role": "assistant",
            "content": make_content("".join(text), "".join(thinking) or None),
        }
        if calls:
            message["tool_calls"] = calls
        if unparsed:
            message["unparsed_tool_calls"] = unparsed
        return message, term

    def create_conversation_prefix_with_tools(
        self, tools: Sequence[ToolSpec], system_prompt: str = ""
    ) -> list[Message]:
        body = f"# Instructions\n\n{system_prompt}\n\n" if system_prompt else ""
        body += "# Tools\n\n## functions\n\nnamespace functions {\n\n"
        for t in tools:
            body += f"// {t['description']}\ntype {t['name']} = "
            props = t["parameters"].get("properties")
            if props:
                required = t["parameters"].get("required", [])
                body += "(_: {\n"
                for pname, spec in props.items():
                    if spec.get("description"):
                        body += f"// {spec['description']}\n"
                    body += f"{pname}{'' if pname in required else '?'}: {_ts_type(spec)}"
                    if "default" in spec:
                        body += f", // default: {json.dumps(spec['default'])}"
                    body += ",\n"
                body += "}) => any;\n\n"
            else:
                body += "() => any;\n\n"
        body += "} // namespace functions"
        return [{"role": "developer", "content": body}]

    def to_openai_message(self, message: Message) -> dict:
        out = super().to_openai_message(message)
        if get_thinking_content(message):
            out["thinking"] = get_thinking_content(message)
        for call in out.get("tool_calls", []):  # the template wants an object (it applies tojson)
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
        return out


def _ts_type(spec: dict) -> str:
    """The TypeScript type the template writes for common JSON Schema parameter types."""
    kind = spec.get("type")
    if kind == "string" and spec.get("enum"):
        return '"' + '" | "'.join(spec["enum"]) + '"'
    simple = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}
    if kind in simple:
        return simple[kind]
    if kind == "array" and spec.get("items", {}).get("type") in simple:
        return simple[spec["items"]["type"]] + "[]"
    raise RendererError(f"gpt_oss: parameter type {spec!r} is not supported in tool declarations")
