"""Properties every registered renderer must have, whatever its format.

* the observation part of a supervised example is exactly the generation prompt of its prefix;
* parsing the trained (action) tokens gives back the assistant message;
* prompts extend each other exactly when the renderer claims the extension property.
"""

from __future__ import annotations

import numpy as np
import pytest
from renderer_cases import WEATHER_TOOL, basic_3turn, system_3turn, thinking_answer, tool_turns, with_answer

from jaxcook.renderers import RENDERERS, ParseTermination, TrainOnWhat, get_renderer
from jaxcook.renderers.base import get_text_content, get_thinking_content
from jaxcook.renderers.tokenizers import offline_tokenizer

# renderer -> (tokenizer family, supports thinking, supports tools)
FAMILY = {
    "role_colon": ("llama3", False, False),
    "llama3": ("llama3", False, False),
    "chatml": ("smollm2", False, False),
    "chatml_no_default_system": ("smollm2", False, False),
    "qwen2_5": ("qwen2_5", False, True),
    "qwen3": ("qwen3", True, True),
    "qwen3_disable_thinking": ("qwen3", False, True),
    "qwen3_instruct": ("qwen3_instruct", False, True),
    "gpt_oss_no_sysprompt": ("gpt_oss", True, True),
    "gpt_oss_low_reasoning": ("gpt_oss", True, True),
    "gpt_oss_medium_reasoning": ("gpt_oss", True, True),
    "gpt_oss_high_reasoning": ("gpt_oss", True, True),
    "kimi_k2": ("kimi_k2", True, True),
    "kimi_k2_instruct": ("kimi_k2_instruct", False, True),
    "deepseekv3": ("deepseek_v3_1", False, True),
    # V3.1 calls tools in non-thinking mode only (a tool-call turn renders `</think>`, not the prompt's
    # `<think>`), so the thinking renderer's tool turns are not checked for round trips here.
    "deepseekv3_thinking": ("deepseek_v3_1", True, False),
}


def test_every_registered_renderer_is_tested_here():
    assert set(FAMILY) == set(RENDERERS)


@pytest.fixture(scope="module", params=sorted(FAMILY))
def renderer(request):
    return get_renderer(request.param, offline_tokenizer(FAMILY[request.param][0]))


def _conversations(renderer):
    _, thinking, tools = FAMILY[renderer.name]
    convos = {"basic": with_answer(basic_3turn()), "system": with_answer(system_3turn())}
    if thinking:
        convos["thinking"] = [*system_3turn(), thinking_answer()]
        convos["thinking_multi"] = [
            *basic_3turn(),
            thinking_answer(),
            {"role": "user", "content": "And 3+3?"},
            thinking_answer("6.", "3 plus 3 is 6."),
        ]
    if tools:
        prefix = renderer.create_conversation_prefix_with_tools([WEATHER_TOOL], "Be brief.")
        convos["tool_call"] = prefix + tool_turns(final=True)[:2]
        convos["after_tool"] = prefix + tool_turns(final=True)
    return convos


def _action(tokens, weights_T) -> list[int]:
    trained = np.flatnonzero(weights_T)
    assert trained.size and np.all(np.diff(trained) == 1), "trained tokens must be one contiguous run"
    return tokens.to_ints()[trained[0] : trained[-1] + 1]


def _same_message(got, want):
    assert got["role"] == want["role"]
    assert get_text_content(got) == get_text_content(want)
    assert get_thinking_content(got) == get_thinking_content(want)
    calls = lambda m: [(c.function.name, c.function.arguments) for c in m.get("tool_calls", [])]
    assert calls(got) == calls(want)
    assert not got.get("unparsed_tool_calls")


def test_observation_is_the_generation_prompt_and_action_parses_back(renderer):
    for name, messages in _conversations(renderer).items():
        tokens, weights_T = renderer.build_supervised_example(messages)
        action = _action(tokens, weights_T)
        observation = tokens.to_ints()[: len(tokens.to_ints()) - len(action)]
        prompt = renderer.build_generation_prompt(messages[:-1]).to_ints()
        # the prompt may prefill part of the response (e.g. an empty think block): the observation
        # is the prompt, up to where the trained tokens begin
        assert prompt[: len(observation)] == observation, name
        assert tokens.to_ints()[: len(prompt)] == prompt, name
        sampled = tokens.to_ints()[len(prompt) :]
        message, term = renderer.parse_response(sampled)
        assert term.is_clean, name
        _same_message(message, messages[-1])


def test_cut_off_response_is_malformed(renderer):
    tokens, weights_T = renderer.build_supervised_example(with_answer(basic_3turn(), "Four, I think."))
    action = _action(tokens, weights_T)
    message, term = renderer.parse_response(action[:3])
    assert term is ParseTermination.MALFORMED and message["role"] == "assistant"


def test_extension_property_holds_exactly_when_claimed(renderer):
    """Prompt of turn t + its response is a prefix of the prompt of turn t+1 iff claimed."""
    convos = _conversations(renderer)
    messages = convos.get("thinking_multi") or [
        *basic_3turn(),
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6."},
    ]
    holds = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant" or k == len(messages) - 1:
            continue
        turn, _ = renderer.build_supervised_example(messages[: k + 1])
        later = renderer.build_generation_prompt(messages[: k + 2]).to_ints()
        holds.append(later[: turn.length] == turn.to_ints())
    assert all(holds) == renderer.has_extension_property


def test_build_supervised_examples_split_iff_no_extension_property(renderer):
    messages = _conversations(renderer).get("thinking_multi") or [
        *basic_3turn(),
        {"role": "assistant", "content": "4."},
    ]
    examples = renderer.build_supervised_examples(messages, TrainOnWhat.ALL_ASSISTANT_MESSAGES)
    n_assistant = sum(m["role"] == "assistant" for m in messages)
    assert len(examples) == (1 if renderer.has_extension_property else n_assistant)
    for tokens, weights_T in examples:
        assert weights_T.shape == (tokens.length,) and weights_T.dtype == np.float32
