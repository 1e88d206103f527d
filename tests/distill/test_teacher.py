"""The teacher: scores equal an independent scoring path, prompts are re-rendered in its own format,
top-K equals the full softmax, and a teacher with another tokenizer is refused."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcook.distill.teacher import Teacher, TeacherConfig, TokenizerMismatchError, check_same_tokenizer
from jaxcook.lora import LoraConfig
from jaxcook.renderers import get_renderer
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.types import Datum, ModelInput
from jaxcook.workflows.common import ModelOptions

TINY = ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4))
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def teacher():
    t = Teacher.load(TeacherConfig(model=TINY), max_length=256, batch_size=4)
    yield t
    t.close()


def sampler_logprobs(teacher, tokens):
    """log p(token i | tokens < i) for i >= 1 from the sampler's prefill: another code path."""
    sc = LocalSamplingClient.from_training_client(teacher.client)
    try:
        return np.asarray(sc.compute_logprobs(ModelInput.from_ints(tokens)).result()[1:])
    finally:
        sc.close()


def test_score_equals_the_samplers_logprobs(teacher):
    prompt = teacher.renderer.build_generation_prompt(QUESTION).to_ints()
    seq = prompt + teacher.tokenizer.encode("5, since 2 + 3 = 5.")
    datum = Datum(ModelInput.from_ints(seq[:-1]), {"target_tokens": np.asarray(seq[1:])})
    (lp,) = teacher.score([datum])
    assert lp.shape == (len(seq) - 1,)
    np.testing.assert_allclose(lp, sampler_logprobs(teacher, seq), atol=2e-4)


def test_completions_are_scored_after_the_teachers_own_prompt():
    cfg = TeacherConfig(model=dataclasses.replace(TINY, renderer="role_colon"), system_prompt="Be brief.")
    other = Teacher.load(cfg, max_length=256, batch_size=4)
    try:
        assert other.rerenders("chatml") and other.rerenders("role_colon")  # format, then system prompt
        completion = other.tokenizer.encode(" 5\n\nUser:")
        (lp,) = other.score_completions([QUESTION], [completion])
        own = get_renderer("role_colon", other.tokenizer).build_generation_prompt(
            [{"role": "system", "content": "Be brief."}, *QUESTION]
        )
        expected = sampler_logprobs(other, own.to_ints() + completion)[-len(completion) :]
        np.testing.assert_allclose(lp, expected, atol=2e-4)
        # the student's (chatml) rendering of the same prompt is another context: other numbers
        chatml = get_renderer("chatml", other.tokenizer).build_generation_prompt(QUESTION).to_ints()
        assert not np.allclose(
            lp, sampler_logprobs(other, chatml + completion)[-len(completion) :], atol=1e-3
        )
    finally:
        other.close()


def test_system_prompt_is_merged_into_an_existing_one(teacher):
    t = Teacher(teacher.setup, TeacherConfig(model=TINY, system_prompt="LONG"))
    assert t.prompt_messages([{"role": "system", "content": "short"}, *QUESTION])[0] == {
        "role": "system",
        "content": "LONG\n\nshort",
    }
    assert t.prompt_messages(QUESTION) == [{"role": "system", "content": "LONG"}, *QUESTION]
    assert not teacher.rerenders("chatml") and teacher.rerenders("role_colon")


def test_topk_equals_the_full_softmax(teacher):
    tokens = teacher.renderer.build_generation_prompt(QUESTION).to_ints()
    datum = Datum(ModelInput.from_ints(tokens), {"target_tokens": np.zeros(len(tokens), np.int32)})
    ((ids, lp),) = teacher.topk([datum], k=5)
    params = teacher.client.current_state().result().params
    model = nnx.merge(teacher.client.graphdef, params, teacher.client.frozen)
    full = np.asarray(jax.nn.log_softmax(model.logits(np.asarray([tokens])), axis=-1))[0]  # [T, V]
    assert ids.shape == lp.shape == (len(tokens), 5)
    np.testing.assert_allclose(lp, np.take_along_axis(full, ids, axis=-1), atol=1e-4)
    np.testing.assert_allclose(lp, -np.sort(-full, axis=-1)[:, :5], atol=1e-4)  # the 5 largest


class VocabTokenizer:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def test_tokenizer_check():
    a = VocabTokenizer({"a": 0, "b": 1})
    check_same_tokenizer(a, VocabTokenizer({"b": 1, "a": 0}), student="s", teacher="t")  # same mapping
    with pytest.raises(TokenizerMismatchError, match=r"tokens with other ids: \['a', 'b'\]"):
        check_same_tokenizer(a, VocabTokenizer({"a": 1, "b": 0}), student="s", teacher="t")
    with pytest.raises(TokenizerMismatchError, match=r"only the student has \['c'\]"):
        check_same_tokenizer(VocabTokenizer({"a": 0, "c": 1}), a, student="s", teacher="t")


def test_teacher_with_another_tokenizer_is_refused():
    from jaxcook.renderers.tokenizers import offline_tokenizer

    qwen = offline_tokenizer("qwen3")
    with pytest.raises(TokenizerMismatchError, match="cross-tokenizer distillation is not supported"):
        Teacher.load(TeacherConfig(model=TINY), student_tokenizer=qwen, student_name="qwen3", max_length=128)
