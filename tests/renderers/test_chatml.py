"""ChatML (SmolLM2) against SmolLM2's own chat template, token for token."""

from __future__ import annotations

import numpy as np
import pytest
from renderer_cases import basic_3turn, hf_ids, system_3turn, with_answer

from jaxcook.renderers import ParseTermination, RendererError, TrainOnWhat, get_renderer
from jaxcook.renderers.tokenizers import offline_tokenizer


@pytest.fixture(scope="module")
def tok():
    return offline_tokenizer("smollm2")


@pytest.fixture(scope="module")
def renderer(tok):
    return get_renderer("chatml", tok)


def _oai(renderer, messages):
    return [renderer.to_openai_message(m) for m in messages]


def test_generation_prompt_matches_hf_template(renderer, tok, convo):
    ours = renderer.build_generation_prompt(convo).to_ints()
    assert ours == hf_ids(tok, _oai(renderer, convo), add_generation_prompt=True)


def test_default_system_prompt_is_inserted_like_the_template(renderer, tok):
    text = tok.decode(renderer.build_generation_prompt(basic_3turn()).to_ints())
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_supervised_example_matches_hf_template_minus_trailing_newline(renderer, tok, convo):
    messages = with_answer(convo)
    tokens, weights = renderer.build_supervised_example(messages)
    hf = hf_ids(tok, _oai(renderer, messages))
    # Deliberate: the "\n" after the final <|im_end|> belongs to the next turn's header.
    assert tok.decode(hf[-1:]) == "\n"
    assert tokens.to_ints() == hf[:-1]
    assert weights.dtype == np.float32 and weights.shape == (tokens.length,)


def test_last_assistant_message_trains_exactly_its_text_and_stop_token(renderer, tok):
    tokens, weights = renderer.build_supervised_example(with_answer(basic_3turn()))
    ids = np.asarray(tokens.to_ints())
    assert tok.decode(ids[weights > 0]) == "The answer is 4.<|im_end|>"
    # the trained tokens are one contiguous run at the end
    assert weights[-1] == 1 and np.all(np.diff(weights) >= 0)


def test_no_default_system_variant_renders_only_given_messages(tok):
    plain = get_renderer("chatml_no_default_system", tok)
    smollm = get_renderer("chatml", tok)
    with_sys = system_3turn()
    assert (
        plain.build_generation_prompt(with_sys).to_ints()
        == smollm.build_generation_prompt(with_sys).to_ints()
    )
    text = tok.decode(plain.build_generation_prompt(basic_3turn()).to_ints())
    assert text.startswith("<|im_start|>user\nHello")


def test_parse_round_trip_and_terminations(renderer, tok):
    messages = with_answer(system_3turn(), "Seven.")
    tokens, weights = renderer.build_supervised_example(messages)
    action = [t for t, w in zip(tokens.to_ints(), weights) if w > 0]
    msg, term = renderer.parse_response(action)
    assert msg == {"role": "assistant", "content": "Seven."} and term is ParseTermination.STOP_SEQUENCE
    msg, term = renderer.parse_response(action[:-1])  # cut off before <|im_end|>
    assert msg["content"] == "Seven." and term is ParseTermination.MALFORMED and not term.is_clean
    with pytest.raises(RendererError, match="after the stop token"):
        renderer.parse_response(action + action)


def test_bad_input_is_rejected(renderer):
    with pytest.raises(RendererError, match="unknown role 'robot'"):
        renderer.build_generation_prompt([{"role": "robot", "content": "beep"}])
    with pytest.raises(RendererError, match="last message to be an assistant"):
        renderer.build_supervised_example(basic_3turn(), TrainOnWhat.LAST_ASSISTANT_MESSAGE)
