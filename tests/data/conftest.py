"""Fixtures for the data tests: the default model's tokenizer and its chatml renderer."""

from __future__ import annotations

import pytest

from jaxcook.models import load_tokenizer
from jaxcook.renderers import get_renderer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return get_renderer("chatml", tokenizer)


def qa(k: int) -> list[dict]:
    """A tiny conversation whose user text identifies it."""
    return [{"role": "user", "content": f"question {k}"}, {"role": "assistant", "content": f"answer {k}"}]


def question_ids(tokenizer, data) -> list[int]:
    """The k of "question k" in each datum: which `qa(k)` it was built from."""
    return [int(tokenizer.decode(d.model_input.to_ints()).split("question ")[1].split("<")[0]) for d in data]
