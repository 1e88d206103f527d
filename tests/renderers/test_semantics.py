"""Loss weights per TrainOnWhat, bad input, malformed responses, registry and model info."""

from __future__ import annotations

import json

import numpy as np
import pytest
from renderer_cases import basic_3turn, system_3turn, thinking_answer, tool_turns, with_answer

from jaxcook.renderers import (
    RENDERERS,
    ParseTermination,
    RendererError,
    TrainOnWhat,
    get_renderer,
)
from jaxcook.renderers.model_info import (
    MODEL_RENDERERS,
    get_recommended_renderer_name,
    warn_if_renderer_not_recommended,
)
from jaxcook.renderers.qwen3 import Qwen3Renderer
from jaxcook.renderers.tokenizers import offline_tokenizer


@pytest.fixture(scope="module")
def chatml():
    return get_renderer("chatml_no_default_system", offline_tokenizer("smollm2"))


@pytest.fixture(scope="module")
def qwen3():
    return get_renderer("qwen3", offline_tokenizer("qwen3"))


def _weights_by_message(renderer, messages, how):
    """Per message: (weight of its header tokens, weight of its output tokens)."""
    tokens, w = renderer.build_supervised_example(messages, how)
    out, pos = [], len(renderer.bos_tokens())
    for i, m in enumerate(messages):
        r = renderer.render_message(
            m, __import__("jaxcook.renderers.base").renderers.base.RenderContext(i, messages)
        )
        head = w[pos : pos + len(r.header)]
        body = w[pos + len(r.header) : pos + len(r.header) + len(r.output)]
        out.append((set(head.tolist()) or {0.0}, set(body.tolist())))
        pos += len(r.header) + len(r.output)
    assert pos == tokens.length
    return out


# messages: system, user, assistant, user, assistant
CONVO = with_answer(system_3turn(), "7.")
EXPECTED_OUTPUT_WEIGHTS = {
    TrainOnWhat.LAST_ASSISTANT_MESSAGE: [0, 0, 0, 0, 1],
    TrainOnWhat.LAST_ASSISTANT_TURN: [0, 0, 0, 0, 1],
    TrainOnWhat.ALL_ASSISTANT_MESSAGES: [0, 0, 1, 0, 1],
    TrainOnWhat.ALL_MESSAGES: [1, 1, 1, 1, 1],
    TrainOnWhat.ALL_TOKENS: [1, 1, 1, 1, 1],
    TrainOnWhat.ALL_USER_AND_SYSTEM_MESSAGES: [1, 1, 0, 1, 0],
}


@pytest.mark.parametrize("how", list(EXPECTED_OUTPUT_WEIGHTS), ids=str)
def test_train_on_what_weights(chatml, how):
    got = _weights_by_message(chatml, CONVO, how)
    header_weight = 1.0 if how is TrainOnWhat.ALL_TOKENS else 0.0
    assert [h for h, _ in got] == [{header_weight}] * len(CONVO)
    assert [b for _, b in got] == [{float(x)} for x in EXPECTED_OUTPUT_WEIGHTS[how]]


def test_customized_uses_trainable_flags_and_requires_them(chatml):
    flags = [False, True, False, False, True]
    messages = [{**m, "trainable": f} for m, f in zip(CONVO, flags)]
    got = _weights_by_message(chatml, messages, TrainOnWhat.CUSTOMIZED)
    assert [b for _, b in got] == [{float(f)} for f in flags]
    with pytest.raises(RendererError, match=r"missing on \[0\]"):
        chatml.build_supervised_example([CONVO[0], *messages[1:]], TrainOnWhat.CUSTOMIZED)
    with pytest.raises(RendererError, match="only TrainOnWhat.CUSTOMIZED"):
        chatml.build_supervised_example(messages, TrainOnWhat.ALL_MESSAGES)


def test_last_assistant_turn_trains_every_assistant_message_after_the_last_user(qwen3):
    messages = tool_turns(final=True)  # user, assistant(call), tool, assistant
    got = _weights_by_message(qwen3, messages, TrainOnWhat.LAST_ASSISTANT_TURN)
    assert [b for _, b in got] == [{0.0}, {1.0}, {0.0}, {1.0}]


def test_strip_thinking_from_history_false_keeps_reasoning_and_extends(qwen3):
    keep = Qwen3Renderer(qwen3.tokenizer, strip_thinking_from_history=False)
    assert keep.has_extension_property and not qwen3.has_extension_property
    history = [*basic_3turn(), thinking_answer(), {"role": "user", "content": "And 3+3?"}]
    tok = qwen3.tokenizer
    assert "2 plus 2 is 4." in tok.decode(keep.build_generation_prompt(history).to_ints())
    assert "2 plus 2 is 4." not in tok.decode(qwen3.build_generation_prompt(history).to_ints())


def test_reasoning_off_renderer_refuses_a_turn_that_reasoned():
    renderer = get_renderer("qwen3_disable_thinking", offline_tokenizer("qwen3"))
    with pytest.raises(RendererError, match="refuses a turn that reasoned"):
        renderer.build_supervised_example([*basic_3turn(), thinking_answer()])


def test_prefill_is_appended_to_the_generation_prompt(qwen3):
    plain = qwen3.build_generation_prompt(basic_3turn()).to_ints()
    prefilled = qwen3.build_generation_prompt(basic_3turn(), prefill="<think>\n").to_ints()
    assert prefilled[: len(plain)] == plain and qwen3.tokenizer.decode(prefilled[len(plain) :]) == "<think>\n"


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_unknown_role_is_rejected(name):
    family = {"chatml": "smollm2", "qwen": "qwen3", "llama": "llama3", "role": "llama3", "gpt": "gpt_oss"}
    family |= {"deepseek": "deepseek_v3_1", "kimi": "kimi_k2"}
    tok = offline_tokenizer(next(v for k, v in family.items() if name.startswith(k)))
    with pytest.raises(RendererError, match="unknown role 'robot'"):
        get_renderer(name, tok).build_generation_prompt([{"role": "robot", "content": "beep"}])


def test_tool_messages_need_their_fields():
    tool = tool_turns()[2]
    gpt = get_renderer("gpt_oss_medium_reasoning", offline_tokenizer("gpt_oss"))
    with pytest.raises(RendererError, match="needs 'name'"):
        gpt.build_generation_prompt([*tool_turns()[:2], {k: v for k, v in tool.items() if k != "name"}])
    kimi = get_renderer("kimi_k2", offline_tokenizer("kimi_k2"))
    with pytest.raises(RendererError, match="needs 'tool_call_id'"):
        kimi.build_generation_prompt(
            [*tool_turns()[:2], {k: v for k, v in tool.items() if k != "tool_call_id"}]
        )


BAD_CALLS = {
    "qwen3": (
        "qwen3",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": }\n</tool_call><|im_end|>',
    ),
    "deepseekv3": (
        "deepseek_v3_1",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{city: Paris}"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>",
    ),
    "gpt_oss_medium_reasoning": (
        "gpt_oss",
        "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{'city'}<|call|>",
    ),
    "kimi_k2": (
        "kimi_k2",
        "<think></think><|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        "<|tool_call_argument_begin|>{oops<|tool_call_end|><|tool_calls_section_end|><|im_end|>",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_malformed_tool_call_json_is_kept_as_unparsed(name):
    family, text = BAD_CALLS[name]
    tok = offline_tokenizer(family)
    message, term = get_renderer(name, tok).parse_response(tok.encode(text, add_special_tokens=False))
    assert term is ParseTermination.STOP_SEQUENCE
    assert not message.get("tool_calls") and len(message["unparsed_tool_calls"]) == 1


def test_tool_call_arguments_must_be_a_json_object(qwen3):
    bad = tool_turns()[:2]
    call = bad[1]["tool_calls"][0]
    bad[1] = {**bad[1], "tool_calls": [type(call)(type(call.function)("get_weather", "[1, 2]"), call.id)]}
    with pytest.raises(RendererError, match="must be a JSON object"):
        qwen3.build_supervised_example(bad)
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_registry_and_model_info():
    with pytest.raises(RendererError, match="valid names: .*'chatml'"):
        get_renderer("no_such_renderer", None)
    for model, renderers in MODEL_RENDERERS.items():
        assert set(renderers) <= set(RENDERERS), model
    assert get_recommended_renderer_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "chatml"
    assert get_recommended_renderer_name("/models/smollm2-135m-instruct/") == "chatml"
    with pytest.warns(UserWarning, match="not recommended"):
        assert warn_if_renderer_not_recommended("smollm2-135m-instruct", "llama3")
    assert not warn_if_renderer_not_recommended("smollm2-135m-instruct", "chatml")
    with pytest.raises(KeyError, match="no renderer is known"):
        get_recommended_renderer_name("acme/unknown-model")


def test_weights_cover_the_full_sequence(chatml):
    tokens, weights = chatml.build_supervised_example(with_answer(basic_3turn()))
    assert weights.dtype == np.float32 and weights.shape == (tokens.length,)
