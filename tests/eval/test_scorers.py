"""Scorers on hand-checked pairs."""

import math

import numpy as np
import pytest

from jaxcook.eval.scorers import SCORERS, get_scorer, lexical_similarity, math_answer


def score(name, pairs):
    return SCORERS[name]([p[0] for p in pairs], [p[1] for p in pairs])


def test_exact_match_collapses_whitespace_only():
    pairs = [
        ("Paris", "Paris"),
        ("  Paris\n", "Paris"),
        ("New   York", "New York"),
        ("paris", "Paris"),
        ("Paris.", "Paris"),
    ]
    assert score("exact_match", pairs) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_contains():
    pairs = [("The capital is Paris.", "Paris"), ("new  york city", "new york"), ("Lyon", "Paris"), ("", "x")]
    assert score("contains", pairs) == [1.0, 1.0, 0.0, 0.0]


def test_regex_searches_anywhere_and_rejects_bad_patterns():
    pairs = [("answer: 42", r"\b42\b"), ("answer: 420", r"\b42\b"), ("Yes!", r"^(yes|Yes)"), ("no", r"^yes$")]
    assert score("regex", pairs) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        score("regex", [("x", "(")])


def test_math_uses_the_boxed_answer_then_the_last_number():
    assert math_answer("so \\boxed{3/4} and 7") == "3/4"
    assert math_answer("first 3, then 1,000") == "1,000"
    pairs = [
        ("The answer is \\boxed{\\frac{3}{4}}", "0.75"),  # 3/4 = 0.75 as fractions
        ("We get 12 apples, so 1,000 in all", "1000"),  # last number, thousands comma dropped
        ("\\boxed{5} though 6 is close", "6"),  # the boxed answer wins over the last number
        ("no number here", "3"),
    ]
    assert score("math", pairs) == [1.0, 1.0, 0.0, 0.0]


def test_lexical_similarity_is_bag_of_words_cosine():
    # "the cat sat" . "the cat ran": shared words the, cat -> dot 2; norms sqrt(3) * sqrt(3) -> 2/3.
    # "a a b" vs "a b b": counts (2, 1) . (1, 2) = 4; norms sqrt(5) * sqrt(5) -> 4/5.
    got = lexical_similarity(
        ["The cat sat", "a a b", "x", "", "Same words"], ["the cat ran", "a b b", "y", "z", "same WORDS"]
    )
    np.testing.assert_allclose(got, [2 / 3, 4 / 5, 0.0, 0.0, 1.0])


def test_semantic_similarity_names_its_backend():
    name, scorer = get_scorer("semantic_similarity")
    assert name == "semantic_similarity_lexical" and scorer is lexical_similarity
    with pytest.raises(ValueError, match="unknown scorer 'bleu'; valid scorers: exact_match, contains"):
        get_scorer("bleu")


def test_embedding_similarity_is_cosine_of_mean_pooled_states(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxcook.models import load_tokenizer

    tok = load_tokenizer("tiny-random-smollm2")
    tok.pad_token = tok.pad_token or tok.eos_token
    config = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    name, scorer = get_scorer("semantic_similarity", embedding_model=str(tmp_path))
    assert name == "semantic_similarity_embedding"
    a, b = ["a cat on a mat", "hello"], ["a dog on a log today", "hello"]
    got = scorer(a, b)

    # Independent reference: each text alone (no padding), mean over its tokens, cosine.
    model = transformers.AutoModel.from_pretrained(tmp_path).eval()

    def embed(text):
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).last_hidden_state[0].mean(0).numpy()

    for (x, y), s in zip(zip(a, b), got):
        u, v = embed(x), embed(y)
        expected = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        assert math.isclose(s, max(0.0, min(1.0, expected)), abs_tol=1e-5)
    assert math.isclose(got[1], 1.0, abs_tol=1e-6)
