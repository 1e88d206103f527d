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


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
}


def openai_tool(spec: dict) -> dict:
    return {"type": "function", "function": dict(spec)}


def weather_call(city: str = "Paris", call_id: str | None = "functions.get_weather:0"):
    import json

    from jaxcook.renderers import FunctionBody, ToolCall

    return ToolCall(FunctionBody("get_weather", json.dumps({"city": city})), id=call_id)


def tool_turns(final: bool = True) -> list[Message]:
    """User asks, assistant calls a tool, the tool answers (and the assistant answers)."""
    turns: list[Message] = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [weather_call()]},
        {
            "role": "tool",
            "content": '{"temp_c": 21}',
            "tool_call_id": "functions.get_weather:0",
            "name": "get_weather",
        },
    ]
    if final:
        turns.append({"role": "assistant", "content": "It is 21 degrees C in Paris."})
    return turns


def thinking_answer(text: str = "The answer is 4.", thinking: str = "2 plus 2 is 4.") -> Message:
    return {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": thinking}, {"type": "text", "text": text}],
    }
