"""Llama 3.x Instruct: header-delimited turns ending in `<|eot_id|>`.

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{u}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{a}<|eot_id|>

Deliberate differences from the HF template (tests add them back before comparing):
* no "Cutting Knowledge Date: December 2023\nToday Date: ..." system preamble (the HF template
  always writes one, with a date that is a template default rather than part of the conversation);
* message content is not `trim`med (a response parses back to exactly what was sampled).
No tool calling: Llama 3's bare-JSON call format cannot be told apart from a JSON answer.
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


class Llama3Renderer(Renderer):
    name = "llama3"
    roles = ("system", "user", "assistant")

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        (self._bos,) = self.encode("<|begin_of_text|>")
        (self._eot,) = self.encode("<|eot_id|>")
        (self._end_of_text,) = self.encode("<|end_of_text|>")

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages):
            if m.get("tool_calls") or has_thinking(m):
                raise RendererError(
                    f"{self.name}: message {i} has tool calls or thinking; Llama 3 has neither"
                )
        return list(messages)

    def bos_tokens(self) -> list[int]:
        return [self._bos]

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        header = self.encode(f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n")
        return RenderedMessage(header, self.encode(get_text_content(message)) + [self._eot])

    def get_stop_sequences(self) -> list[int]:
        return [self._eot]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        body, term = split_at_stop(tokens, [self._eot], self._end_of_text)
        return {"role": "assistant", "content": self.decode(body)}, term
