"""Conversations and HF-template helpers shared by the renderer tests."""

from __future__ import annotations

from jaxcook.renderers.base import Message


def basic_3turn() -> list[Message]:
    return [
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "I'm fine, thanks! And you?"},
        {"role": "user", "content": "What is 2+2?"},
    ]


def system_3turn() -> list[Message]:
    return [
        {"role": "system", "content": "You are a terse math tutor."},
        {"role": "user", "content": "What is 3 * 7?"},
        {"role": "assistant", "content": "21."},
        {"role": "user", "content": "And 21 / 3?"},
    ]


def with_answer(convo: list[Message], text: str = "The answer is 4.") -> list[Message]:
    return [*convo, {"role": "assistant", "content": text}]


def hf_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    """Token ids from the tokenizer's own chat template (`apply_chat_template`, tokenized)."""
    out = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def hf_text(tokenizer, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
