"""Talk to a model: streamed replies in chunks of tokens, and a chat session with a renderer.

The sampler is one jitted decode loop per call, so a reply is streamed as successive calls of
`chunk_tokens` new tokens each (the prompt grows by what was sampled; each call re-reads it
in one prefill). The text shown grows by what the tokens decoded so far add; a stop token or
stop string (checked on the whole reply, so one split across chunks is found) ends the reply.

    session = ChatSession(sampling_client, renderer, SamplingParams(max_tokens=256, temperature=0.7))
    text = session.reply("Hi!", on_text=lambda delta: print(delta, end="", flush=True))
    session.set_system("Answer in French."); session.reset()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from jaxcook.sampling.stops import cut_at_stop_string
from jaxcook.types import ModelInput, SamplingParams


def stream_tokens(
    client,
    prompt: Sequence[int],
    params: SamplingParams,
    *,
    stop: Sequence[int] | Sequence[str] | None = None,
    chunk_tokens: int = 16,
) -> Iterator[list[int]]:
    """Yield the new tokens of one completion of `prompt`, a chunk at a time, until a stop or
    `params.max_tokens` (default: the client's). Stop tokens are included, as `sample` returns them."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    max_tokens = params.max_tokens if params.max_tokens is not None else client.default_max_tokens
    stop = params.stop if stop is None else stop
    strings = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str)]
    decode = lambda ids: client.tokenizer.decode(ids, skip_special_tokens=False)
    generated: list[int] = []
    chunk = 0
    while len(generated) < max_tokens and len(prompt) + len(generated) < client.context_window:
        n = min(chunk_tokens, max_tokens - len(generated))
        seed = None if params.seed is None else params.seed + chunk
        step = replace(params, max_tokens=n, stop=stop, seed=seed)
        seq = client.sample(ModelInput.from_ints([*prompt, *generated]), 1, step).result().sequences[0]
        new, stopped = list(seq.tokens), seq.stop_reason == "stop"
        if strings:  # a stop string may straddle two chunks: look at the whole reply
            cut = cut_at_stop_string([*generated, *new], strings, decode)
            if cut is not None:
                new, stopped = new[: cut - len(generated)], True
        generated += new
        chunk += 1
        if new:
            yield new
        if stopped:
            return


class TextStream:
    """Text deltas of a growing token list: decodes everything so far and returns what is new,
    holding back an incomplete UTF-8 character (decoded as U+FFFD) until it completes."""

    def __init__(self, tokenizer):
        self.tokenizer, self.tokens, self.shown = tokenizer, [], ""

    def push(self, tokens: Sequence[int]) -> str:
        self.tokens += list(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        delta = text[len(self.shown) :] if text.startswith(self.shown) else text
        self.shown = text
        return delta


class ChatSession:
    """A conversation with a model through its renderer: the history, an optional system prompt."""

    def __init__(
        self, client, renderer, params: SamplingParams, *, system: str | None = None, chunk_tokens=16
    ):
        self.client, self.renderer, self.params, self.chunk_tokens = client, renderer, params, chunk_tokens
        self.system = system
        self.history: list[dict] = []

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.history = []

    def set_system(self, text: str | None) -> None:
        """Set (or, with None / "", clear) the system prompt; the conversation starts over."""
        self.system = text or None
        self.reset()

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def reply(self, user_text: str, *, on_text: Callable[[str], None] | None = None) -> str:
        """Add the user's message, stream the model's reply (`on_text(delta)` per decoded chunk),
        add the reply to the history and return its text (the renderer's parse of the tokens)."""
        self.history.append({"role": "user", "content": user_text})
        prompt = self.renderer.build_generation_prompt(self.messages()).to_ints()
        stream = TextStream(self.client.tokenizer)
        tokens: list[int] = []
        for new in stream_tokens(
            self.client,
            prompt,
            self.params,
            stop=self.renderer.get_stop_sequences(),
            chunk_tokens=self.chunk_tokens,
        ):
            tokens += new
            delta = stream.push(new)
            if delta and on_text is not None:
                on_text(delta)
        message, _ = self.renderer.parse_response(tokens)
        self.history.append(message)
        content = message.get("content")
        return content if isinstance(content, str) else stream.shown
