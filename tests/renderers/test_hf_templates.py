"""Every renderer against its model's real chat template (`apply_chat_template`), token for token.

Each case names a renderer, the offline tokenizer family that carries the real template, the
template kwargs that select the same mode, and which deliberate differences the comparison
accounts for (see `CASES`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from renderer_cases import (
    WEATHER_TOOL,
    basic_3turn,
    hf_ids,
    hf_text,
    openai_tool,
    system_3turn,
    thinking_answer,
    tool_turns,
    with_answer,
)

from jaxcook.renderers import get_renderer
from jaxcook.renderers.base import get_text_content, get_thinking_content
from jaxcook.renderers.tokenizers import offline_tokenizer


@dataclass(frozen=True)
class Case:
    renderer: str
    family: str
    hf_kwargs: dict = field(default_factory=dict)
    tools: bool = False
    thinking: bool = False
    # The HF template ends a supervised example with this text after the stop token; ours does not
    # (the "\n" between ChatML turns belongs to the next header).
    sft_trailing: str = ""
    template_has_tools: bool = True  # False: tools are declared in our system message only
    # Thinking renderers whose template cannot write a trained turn's reasoning: a supervised
    # example is the template's prompt followed by `reasoned_turn(reasoning, text)` and the stop.
    reasoned_turn: Callable[[str, str], str] | None = None
    # Deliberate differences in what our renderer writes, added back to our messages.
    adjust: Callable[[list], list] = lambda messages: messages
    # ... or removed from the template's text before it is tokenized.
    fix_text: Callable[[str], str] | None = None


LLAMA_DATE_PREAMBLE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


def harmony_raw_tool_output(text: str) -> str:
    """Harmony writes a tool result raw; gpt-oss's HF template JSON-quotes it (`|tojson`)."""
    raw = tool_turns()[2]["content"]
    return text.replace(json.dumps(raw), raw)


def harmony_without_system(text: str) -> str:
    """`gpt_oss_no_sysprompt` omits the Harmony system message the template always writes."""
    return harmony_raw_tool_output(
        re.sub(r"^<\|start\|>system<\|message\|>.*?<\|end\|>", "", text, flags=re.S)
    )


def add_llama_date_preamble(messages: list) -> list:
    """Llama 3's template always opens with a dated system block; our renderer does not."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": LLAMA_DATE_PREAMBLE + messages[0]["content"]}
        return [first, *messages[1:]]
    return [{"role": "system", "content": LLAMA_DATE_PREAMBLE}, *messages]


CASES = [
    Case("chatml", "smollm2", sft_trailing="\n"),
    Case("llama3", "llama3", adjust=add_llama_date_preamble),
    Case("qwen2_5", "qwen2_5", tools=True, sft_trailing="\n"),
    Case("qwen3", "qwen3", tools=True, thinking=True, sft_trailing="\n"),
    Case("qwen3_disable_thinking", "qwen3", {"enable_thinking": False}, tools=True, sft_trailing="\n"),
    Case("qwen3_instruct", "qwen3_instruct", tools=True, sft_trailing="\n"),
    *(
        Case(
            f"gpt_oss_{e}_reasoning",
            "gpt_oss",
            {"reasoning_effort": e},
            True,
            True,
            fix_text=harmony_raw_tool_output,
        )
        for e in ("low", "medium", "high")
    ),
    Case("gpt_oss_no_sysprompt", "gpt_oss", tools=True, thinking=True, fix_text=harmony_without_system),
    Case(
        "kimi_k2",
        "kimi_k2",
        tools=True,
        thinking=True,
        reasoned_turn=lambda r, t: f"<think>{r}</think>{t}",
    ),
    Case("kimi_k2_instruct", "kimi_k2_instruct", tools=True),
    Case("kimi_k2_instruct", "kimi_k2_instruct_0905", tools=True),
    Case("deepseekv3", "deepseek_v3_1", tools=True, template_has_tools=False),
    Case(
        "deepseekv3_thinking",
        "deepseek_v3_1",
        {"thinking": True},
        tools=True,
        thinking=True,
        template_has_tools=False,
        reasoned_turn=lambda r, t: f"{r}</think>{t}",
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.renderer)
def case(request):
    c = request.param
    tok = offline_tokenizer(c.family)
    return c, tok, get_renderer(c.renderer, tok)


def _conversations(case: Case, renderer, final: bool):
    """(name, our messages, HF messages, HF tools) for each conversation the case supports."""
    answer = (lambda m: with_answer(m)) if final else (lambda m: m)
    out = [("basic", answer(basic_3turn()), None), ("system", answer(system_3turn()), None)]
    if case.thinking and final:
        out.append(("thinking", [*basic_3turn(), thinking_answer()], None))
    if case.thinking and not final:
        history = [*basic_3turn(), thinking_answer(), {"role": "user", "content": "Thanks! And 3+3?"}]
        out.append(("thinking_history", history, None))
    for name, msgs, _ in list(out):
        yield name, msgs, [renderer.to_openai_message(m) for m in msgs], None
    if case.tools:
        system = {"role": "system", "content": "You are a weather bot."}
        prefix = renderer.create_conversation_prefix_with_tools([WEATHER_TOOL], system["content"])
        variants = [("tools", tool_turns(final=final))]
        if final:
            variants.append(("tool_call_last", tool_turns(final=True)[:2]))
        for name, turns in variants:
            if case.template_has_tools:
                hf = [renderer.to_openai_message(m) for m in [system, *turns]]
                yield name, prefix + turns, hf, [openai_tool(WEATHER_TOOL)]
            else:
                yield name, prefix + turns, [renderer.to_openai_message(m) for m in prefix + turns], None


def _hf(c: Case, tok, messages, **kwargs) -> list[int]:
    if c.fix_text is None:
        return hf_ids(tok, messages, **kwargs, **c.hf_kwargs)
    return tok.encode(c.fix_text(hf_text(tok, messages, **kwargs, **c.hf_kwargs)), add_special_tokens=False)


def test_generation_prompt_equals_hf(case):
    c, tok, renderer = case
    for name, ours, hf, tools in _conversations(c, renderer, final=False):
        expected = _hf(c, tok, hf, tools=tools, add_generation_prompt=True)
        got = renderer.build_generation_prompt(c.adjust(ours)).to_ints()
        assert got == expected, f"{c.renderer}/{name}:\n{tok.decode(got)!r}\n!=\n{tok.decode(expected)!r}"


def test_supervised_example_equals_hf(case):
    c, tok, renderer = case
    for name, ours, hf, tools in _conversations(c, renderer, final=True):
        last = ours[-1]
        if c.reasoned_turn is not None and not last.get("tool_calls") and ours[-2]["role"] == "user":
            prompt = _hf(c, tok, hf[:-1], tools=tools, add_generation_prompt=True)
            reasoned = c.reasoned_turn(get_thinking_content(last), get_text_content(last))
            expected = prompt + tok.encode(reasoned, add_special_tokens=False) + [tok.eos_token_id]
        else:
            expected = _hf(c, tok, hf, tools=tools)
        if c.sft_trailing:
            trailing = tok.encode(c.sft_trailing, add_special_tokens=False)
            assert expected[-len(trailing) :] == trailing
            expected = expected[: -len(trailing)]
        tokens, _ = renderer.build_supervised_example(c.adjust(ours))
        got = tokens.to_ints()
        assert got == expected, f"{c.renderer}/{name}:\n{tok.decode(got)!r}\n!=\n{tok.decode(expected)!r}"
