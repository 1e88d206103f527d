"""Conversations as plain JSON: check `{"messages": [{"role", "content"}, ...]}` records.

A conversation is a non-empty list of messages. A message is an object with a known `role` and
a `content` that is a string or a list of parts (`{"type": "text", "text"}` or
`{"type": "thinking", "thinking"}`); `content` may be null only on an assistant message that calls
tools. OpenAI-style `tool_calls` become `ToolCall`s; `trainable`, `name` and `tool_call_id` are
kept; other keys are ignored. Every error names where the record came from (`path:line`, or a
dataset row), the message index and the key at fault.
"""

from __future__ import annotations

import json
from typing import Any

from jaxcook.data.errors import DataFormatError
from jaxcook.renderers import FunctionBody, Message, ToolCall

KNOWN_ROLES = ("system", "user", "assistant", "tool")
_PART_KEYS = {"text": "text", "thinking": "thinking"}


def parse_record(record: Any, where: str, *, message_field: str = "messages") -> list[Message]:
    """The conversation in a JSON object `{message_field: [...], ...}`."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if message_field not in record:
        raise DataFormatError(f"{where}: missing key {message_field!r} (keys: {sorted(record)})")
    return parse_conversation(record[message_field], where)


def parse_conversation(messages: Any, where: str) -> list[Message]:
    """Check a list of message objects and return them as renderer `Message`s."""
    if not isinstance(messages, list | tuple):
        raise DataFormatError(f"{where}: messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise DataFormatError(f"{where}: messages is empty")
    return [_parse_message(m, f"{where}: message {j}") for j, m in enumerate(messages)]


def _parse_message(obj: Any, where: str) -> Message:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(obj).__name__}")
    role = obj.get("role")
    if role is None:
        raise DataFormatError(f"{where}: missing key 'role'")
    if role not in KNOWN_ROLES:
        raise DataFormatError(f"{where}: unknown role {role!r}; expected one of {list(KNOWN_ROLES)}")
    msg: Message = {"role": role}
    if obj.get("tool_calls"):
        msg["tool_calls"] = _parse_tool_calls(obj["tool_calls"], where)
    if "content" not in obj:
        raise DataFormatError(f"{where}: missing key 'content'")
    content = obj["content"]
    if content is None and "tool_calls" in msg:
        content = ""
    msg["content"] = _parse_content(content, where)
    if "trainable" in obj and obj["trainable"] is not None:
        if not isinstance(obj["trainable"], bool):
            raise DataFormatError(f"{where}: 'trainable' must be true or false, got {obj['trainable']!r}")
        msg["trainable"] = obj["trainable"]
    for key in ("name", "tool_call_id"):
        if obj.get(key) is not None:
            msg[key] = str(obj[key])
    return msg


def _parse_content(content: Any, where: str):
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataFormatError(
            f"{where}: 'content' must be a string or a list of parts, got {type(content).__name__}"
        )
    parts = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_KEYS or not isinstance(part.get(_PART_KEYS[kind]), str):
            raise DataFormatError(
                f"{where}: content part {k} must be {{'type': 'text', 'text': str}} or "
                f"{{'type': 'thinking', 'thinking': str}}, got {part!r}"
            )
        parts.append({"type": kind, _PART_KEYS[kind]: part[_PART_KEYS[kind]]})
    return parts


def _parse_tool_calls(calls: Any, where: str) -> list[ToolCall]:
    if not isinstance(calls, list):
        raise DataFormatError(f"{where}: 'tool_calls' must be a list, got {type(calls).__name__}")
    out = []
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or "arguments" not in fn:
            raise DataFormatError(
                f"{where}: tool call {k} must be {{'function': {{'name': str, 'arguments': ...}}}}, "
                f"got {call!r}"
            )
        args = fn["arguments"]
        if not isinstance(args, str):  # some datasets store the arguments as an object
            args = json.dumps(args)
        out.append(ToolCall(function=FunctionBody(name=fn["name"], arguments=args), id=call.get("id")))
    return out
