"""Test doubles for RL: a character-level ChatML renderer with tool calls, and a scripted policy.

FakeRenderer tokens: one token per character (its code point, < 256 for the text used here) plus
two specials, IM_START and IM_END (the stop token). A message renders as
`<IM_START>role\\ncontent<IM_END>\\n`; an assistant tool call is written in the content as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen style), and parsed back.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence

from jaxcook.ports import TokensWithLogprobs
from jaxcook.renderers import FunctionBody, Message, ParseTermination, ToolCall, UnparsedToolCall
from jaxcook.types import ModelInput

IM_START, IM_END = 300, 301
_SPECIAL = {IM_START: "<|im_start|>", IM_END: "<|im_end|>"}


def encode(text: str) -> list[int]:
    out = []
    for part in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
        if part == "<|im_start|>":
            out.append(IM_START)
        elif part == "<|im_end|>":
            out.append(IM_END)
        else:
            out.extend(ord(c) for c in part)
    return out


def decode(tokens: Sequence[int]) -> str:
    return "".join(_SPECIAL.get(t, chr(t)) for t in tokens)


class FakeRenderer:
    name = "fake_chatml"
    has_extension_property = True

    def encode(self, text: str) -> list[int]:
        return encode(text)

    def decode(self, tokens: Sequence[int]) -> str:
        return decode(tokens)

    def _content(self, message: Message) -> str:
        text = message.get("content", "")
        for call in message.get("tool_calls", []):
            args = json.loads(call.function.arguments)
            text += (
                f'<tool_call>{{"name": "{call.function.name}", "arguments": {json.dumps(args)}}}</tool_call>'
            )
        return text

    def render_messages(self, messages: Sequence[Message]) -> str:
        return "".join(f"<|im_start|>{m['role']}\n{self._content(m)}<|im_end|>\n" for m in messages)

    def build_generation_prompt(self, messages, role="assistant", prefill=None) -> ModelInput:
        text = self.render_messages(messages) + f"<|im_start|>{role}\n" + (prefill or "")
        return ModelInput.from_ints(encode(text))

    def get_stop_sequences(self) -> list[int]:
        return [IM_END]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        tokens = list(tokens)
        if IM_END in tokens:
            body, term = tokens[: tokens.index(IM_END)], ParseTermination.STOP_SEQUENCE
        else:
            body, term = tokens, ParseTermination.MALFORMED
        text = decode(body)
        calls, unparsed = [], []
        for i, raw in enumerate(re.findall(r"<tool_call>(.*?)</tool_call>", text, flags=re.S)):
            try:
                obj = json.loads(raw)
                calls.append(
                    ToolCall(FunctionBody(obj["name"], json.dumps(obj["arguments"])), id=f"call_{i}")
                )
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                unparsed.append(UnparsedToolCall(raw, str(e)))
        content = re.sub(r"<tool_call>.*?</tool_call>", "", text, flags=re.S)
        message: Message = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        if unparsed:
            message["unparsed_tool_calls"] = unparsed
        return message, term

    def create_conversation_prefix_with_tools(self, tools, system_prompt: str = "") -> list[Message]:
        return [{"role": "system", "content": f"{system_prompt}\nTools: {json.dumps(list(tools))}"}]


class ScriptedCompleter:
    """A TokenCompleter that answers from `respond(prompt_text) -> str`.

    The reply is encoded with `encode_fn`; if it ends with the stop token, stop_reason is "stop";
    a reply longer than `max_tokens` is cut there with stop_reason "length". Logprobs are
    -0.01 * (position + 1). Records every call and the peak number of calls in flight.
    """

    def __init__(self, respond: Callable[[str], str], encode_fn=encode, decode_fn=decode):
        self.respond, self.encode_fn, self.decode_fn = respond, encode_fn, decode_fn
        self.calls: list[tuple[list[int], int | None]] = []
        self.in_flight = 0
        self.peak_in_flight = 0

    async def __call__(self, model_input, stop, *, max_tokens=None) -> TokensWithLogprobs:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent callers pile up, as a batching sampler would
            prompt = model_input.to_ints()
            self.calls.append((prompt, max_tokens))
            tokens = self.encode_fn(self.respond(self.decode_fn(prompt)))
            stop_reason = "stop"
            if max_tokens is not None and len(tokens) > max_tokens:
                tokens, stop_reason = tokens[:max_tokens], "length"
            elif not tokens or tokens[-1] not in stop:
                stop_reason = "length"
            logprobs = [-0.01 * (i + 1) for i in range(len(tokens))]
            return TokensWithLogprobs(tokens, logprobs, stop_reason)
        finally:
            self.in_flight -= 1


def last_user_text(prompt: str) -> str:
    """The content of the last user turn of a rendered ChatML prompt."""
    turns = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt, flags=re.S)
    return turns[-1] if turns else ""
