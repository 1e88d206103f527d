"""Kimi K2 Instruct beyond the template comparison (`test_hf_templates`): no reasoning, ever."""

import pytest
from renderer_cases import basic_3turn, thinking_answer

from jaxcook.renderers import RendererError, get_renderer
from jaxcook.renderers.tokenizers import offline_tokenizer


@pytest.fixture(scope="module")
def instruct():
    return get_renderer("kimi_k2_instruct", offline_tokenizer("kimi_k2_instruct"))


def test_a_message_with_thinking_is_an_error(instruct):
    with pytest.raises(RendererError, match="message 3 has thinking, which this model never writes"):
        instruct.build_supervised_example([*basic_3turn(), thinking_answer()])


def test_a_think_tag_in_a_response_stays_text(instruct):
    tok = instruct.tokenizer
    message, _ = instruct.parse_response(tok.encode("<think>x</think>4<|im_end|>", add_special_tokens=False))
    assert message["content"] == "<think>x</think>4"


def test_only_the_inserted_system_prompt_is_followed_by_a_newline(instruct):
    tok = instruct.tokenizer
    inserted = tok.decode(instruct.build_generation_prompt(basic_3turn()).to_ints())
    system = {"role": "system", "content": "You are Kimi, an AI assistant created by Moonshot AI."}
    given = tok.decode(instruct.build_generation_prompt([system, *basic_3turn()]).to_ints())
    assert inserted == given.replace("<|im_end|>", "<|im_end|>\n", 1)
