"""ChatML, the format of SmolLM2 (the embedded default model) and the Qwen2 family.

    <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>

The "\n" between turns belongs to the *next* header, so a trained turn ends on `<|im_end|>` (the
stop token) and never teaches the model to write past it; the generation prompt still equals the
HF template's output token for token, and a supervised example equals it minus the template's
trailing "\n".

Default system prompt: SmolLM2's HF template inserts "You are a helpful AI assistant named SmolLM,
trained by Hugging Face" when a non-empty conversation does not open with a system message. The
`chatml` renderer does the same, so it matches SmolLM2's template on every conversation; a model
that was tuned on it sees the same prompt at training and sampling time. `chatml_no_default_system`
renders only the messages given (generic ChatML). Qwen2.5 (another default prompt, tool calls) is
`qwen2_5` in `qwen3.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxcook.renderers.base import (
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    RendererError,
    check_roles,
    get_text_content,
    has_thinking,
    split_at_stop,
)

SMOLLM2_DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class ChatMLRenderer(Renderer):
    """Plain ChatML: system, user and assistant text messages; no thinking, no tools."""

    roles = ("system", "user", "assistant")

    def __init__(self, tokenizer, *, name: str = "chatml", default_system_prompt: str | None = None):
        super().__init__(tokenizer)
        self.name = name
        self.default_system_prompt = default_system_prompt
        self._im_end = self._special_id("<|im_end|>")

    def _special_id(self, token: str) -> int:
        ids = self.encode(token)
        if len(ids) != 1:
            raise RendererError(f"{self.name}: tokenizer has no single token for {token!r} (got {ids})")
        return ids[0]

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages):
            if m.get("tool_calls") or has_thinking(m):
                raise RendererError(
                    f"{self.name}: message {i} has tool calls or thinking, which plain ChatML cannot "
                    "express (use qwen2_5 or qwen3)"
                )
        messages = list(messages)
        if self.default_system_prompt is not None and messages and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.default_system_prompt})
        return messages

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        sep = "\n" if ctx.idx > 0 else ""
        header = self.encode(f"{sep}<|im_start|>{message['role']}\n")
        output = self.encode(get_text_content(message)) + [self._im_end]
        return RenderedMessage(header=header, output=output)

    def get_stop_sequences(self) -> list[int]:
        return [self._im_end]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._im_end], self.tokenizer.eos_token_id)
        return {"role": "assistant", "content": self.decode(body)}, term
