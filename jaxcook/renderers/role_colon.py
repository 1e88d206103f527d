"""RoleColon, for base (not instruction-tuned) models: plain text turns.

    [BOS]User: {u}\n\nAssistant: {a}\n\nUser: ...

The header is `Role:`; the output is `" " + content + "\n\n"`. A base model has no end-of-turn
token, so it stops on the *string* "\n\nUser:"; a supervised example therefore ends with an
extra "User:" (trained like the last message) so the model learns to write its own stop string.
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
)

STOP = "\n\nUser:"


class RoleColonRenderer(Renderer):
    name = "role_colon"
    roles = ("system", "user", "assistant")

    def prepare(self, messages: Sequence[Message]) -> list[Message]:
        check_roles(self.name, messages, self.roles)
        for i, m in enumerate(messages):
            if m.get("tool_calls") or has_thinking(m):
                raise RendererError(
                    f"{self.name}: message {i} has tool calls or thinking (base models have none)"
                )
        return list(messages)

    def bos_tokens(self) -> list[int]:
        bos = self.tokenizer.bos_token_id
        return [] if bos is None else [bos]

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        header = self.encode(message["role"].capitalize() + ":")
        output = self.encode(" " + get_text_content(message) + "\n\n")
        return RenderedMessage(header, output, stop_overlap=self.encode("User:"))

    def get_stop_sequences(self) -> list[str]:
        return [STOP]

    def parse_response(self, tokens: list[int]) -> tuple[Message, ParseTermination]:
        tokens = list(tokens)
        eos = self.tokenizer.eos_token_id
        ended_by_eos = bool(tokens) and tokens[-1] == eos
        text = self.decode(tokens[:-1] if ended_by_eos else tokens)
        pieces = text.split(STOP)
        if len(pieces) == 1 and ended_by_eos:
            term = ParseTermination.EOS
        elif len(pieces) == 2 and not ended_by_eos:
            term = ParseTermination.STOP_SEQUENCE
        else:  # cut off, or more than one stop signal
            term = ParseTermination.MALFORMED
        content = pieces[0].removeprefix(" ").removesuffix("\n\n")
        return {"role": "assistant", "content": content}, term
