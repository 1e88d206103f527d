"""Conversation -> Datum: alignment, weights, reduction, truncation, untrainable examples."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcook.data import (
    DataFormatError,
    DatumConverter,
    DatumPolicy,
    ExampleTooLongError,
    UntrainableExampleError,
    conversation_to_datum,
)
from jaxcook.renderers import TrainOnWhat

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
# What SmolLM2's chat template writes for HI (its default system prompt included), without the
# template's trailing "\n": the supervised sequence ends on the trained <|im_end|>.
HI_TEXT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello there<|im_end|>"
)


def _encode(tokenizer, text):
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_datum_alignment_and_weights_hand_checked(tokenizer, renderer):
    seq = _encode(tokenizer, HI_TEXT)
    reply = _encode(tokenizer, "Hello there") + _encode(tokenizer, "<|im_end|>")
    assert len(reply) == 3  # "Hello", " there", "<|im_end|>"
    d = conversation_to_datum(HI, renderer, max_length=None, reduction="none")
    # input = seq[:-1], targets = seq[1:]: position i predicts token i + 1.
    assert d.model_input.to_ints() == seq[:-1]
    np.testing.assert_array_equal(d.loss_fn_inputs["target_tokens"], seq[1:])
    # Trained targets are exactly the reply and its end-of-turn token (the last 3 targets).
    w = d.loss_fn_inputs["weights"]
    np.testing.assert_array_equal(w, [0.0] * (len(seq) - 4) + [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(d.loss_fn_inputs["target_tokens"][w > 0], reply)


def test_mean_reduction_is_a_per_example_token_mean(renderer):
    d = conversation_to_datum(HI, renderer, max_length=None, reduction="mean")
    w = d.loss_fn_inputs["weights"]
    np.testing.assert_allclose(w[w > 0], [1 / 3] * 3)  # 3 trained tokens, weights sum to 1
    two_turns = HI + [{"role": "user", "content": "And you?"}, {"role": "assistant", "content": "Fine."}]
    w2 = conversation_to_datum(two_turns, renderer, max_length=None).loss_fn_inputs["weights"]
    n = int((w2 > 0).sum())
    assert n == 3 + 3  # "Fine", ".", "<|im_end|>" in the second reply
    np.testing.assert_allclose(w2[w2 > 0], 1 / n, rtol=1e-6)
    # A token-sum loss with these weights is the token-mean NLL, whatever the example's length.
    nll = np.arange(len(w2), dtype=np.float64)
    np.testing.assert_allclose((w2 * nll).sum(), nll[w2 > 0].mean(), rtol=1e-6)


def test_right_truncation(tokenizer, renderer):
    seq = _encode(tokenizer, HI_TEXT)
    n = len(seq)
    d = conversation_to_datum(HI, renderer, max_length=n - 1, reduction="mean")
    # Cut to the first n-1 tokens: <|im_end|> is gone, "Hello" and " there" stay (weight 1/2 each).
    assert d.length == n - 2
    np.testing.assert_array_equal(d.loss_fn_inputs["target_tokens"], seq[1 : n - 1])
    np.testing.assert_allclose(d.loss_fn_inputs["weights"][-2:], [0.5, 0.5])
    assert d.loss_fn_inputs["weights"].sum() == pytest.approx(1.0)
    # Cut before the reply: nothing left to train.
    with pytest.raises(UntrainableExampleError, match="after right-truncation to max_length=31"):
        conversation_to_datum(HI, renderer, max_length=n - 3, where="ex7")
    assert n - 3 == 31


def test_drop_instead_of_truncate_is_counted(renderer):
    with pytest.raises(ExampleTooLongError, match="ex1: 34 tokens > max_length=20"):
        conversation_to_datum(HI, renderer, max_length=20, too_long="drop", where="ex1")
    convert = DatumConverter(renderer, DatumPolicy(max_length=20, too_long="drop"))
    assert convert("a", HI) is None
    assert convert.counts["data/dropped_too_long"] == 1
    truncating = DatumConverter(renderer, DatumPolicy(max_length=33))
    assert truncating("a", HI).length == 32 and truncating.counts["data/truncated"] == 1
    # "Hello" is one token, so this example has 33 tokens = max_length: it fits, nothing is counted.
    d = truncating("b", HI[:1] + [{"role": "assistant", "content": "Hello"}])
    assert d.length == 32 and d.loss_fn_inputs["weights"][-1] == 0.5  # "Hello", "<|im_end|>"
    assert truncating.counts["data/truncated"] == 1


def test_no_assistant_turn_is_an_error_naming_the_example_or_a_counted_skip(renderer):
    only_user = [{"role": "user", "content": "Hi"}]
    with pytest.raises(UntrainableExampleError, match=r"chats.jsonl:3: .*no assistant message"):
        conversation_to_datum(only_user, renderer, max_length=64, where="chats.jsonl:3")
    with pytest.raises(UntrainableExampleError, match="needs a final assistant message"):
        conversation_to_datum(
            HI + [{"role": "user", "content": "?"}],
            renderer,
            max_length=64,
            train_on_what=TrainOnWhat.LAST_ASSISTANT_MESSAGE,
        )
    convert = DatumConverter(renderer, DatumPolicy(max_length=64, on_untrainable="skip"))
    out = convert.convert_all([("a", HI), ("b", only_user), ("c", HI)])
    assert len(out) == 2 and convert.counts["data/skipped_untrainable"] == 1
    assert convert.counts["data/datums"] == 2
    with pytest.raises(UntrainableExampleError, match="b: "):
        DatumConverter(renderer, DatumPolicy(max_length=64)).convert_all([("a", HI), ("b", only_user)])


def test_bad_records_raise_or_are_counted(renderer):
    bad_role = [{"role": "wizard", "content": "x"}, HI[1]]
    tool = [HI[0], {"role": "tool", "content": "42"}, HI[1]]  # a known role chatml cannot render
    with pytest.raises(DataFormatError, match="row 5: message 0: unknown role 'wizard'"):
        DatumConverter(renderer, DatumPolicy(max_length=64))("row 5", bad_role)
    with pytest.raises(DataFormatError, match="row 6: chatml: message 1 has unknown role 'tool'"):
        DatumConverter(renderer, DatumPolicy(max_length=64))("row 6", tool)
    convert = DatumConverter(renderer, DatumPolicy(max_length=64, on_bad_record="skip"))
    assert convert.convert_all([("a", bad_role), ("b", tool), ("c", HI)])[0].length == 33
    assert convert.counts["data/skipped_bad_record"] == 2


def test_policy_rejects_unknown_options():
    with pytest.raises(ValueError, match="too_long must be one of"):
        DatumPolicy(max_length=8, too_long="cut")
    with pytest.raises(ValueError, match="'all_assistant'"):
        DatumPolicy(max_length=8, train_on_what="all_assistant")
