"""Fixtures for the preference tests: the default model's tokenizer, its chatml renderer."""

from __future__ import annotations

import pytest

from jaxcook.models import load_tokenizer
from jaxcook.renderers import get_renderer


@pytest.fixture(scope="package")
def tokenizer():
    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="package")
def renderer(tokenizer):
    return get_renderer("chatml", tokenizer)
