"""Fixtures for the renderer tests."""

from __future__ import annotations

import pytest
from renderer_cases import basic_3turn, system_3turn

from jaxcook.renderers.base import Message


@pytest.fixture(params=["basic", "system"])
def convo(request) -> list[Message]:
    return {"basic": basic_3turn, "system": system_3turn}[request.param]()
