"""The MODELS entries of the new families: each names a renderer that exists, picks it from the
hub id, and resolves to a hub download of that id."""

from pathlib import Path

import pytest

import jaxcook.models as models
from jaxcook.models import MODELS, resolve
from jaxcook.renderers import RENDERERS
from jaxcook.workflows.common import ModelOptions, renderer_name_for

HUB_ENTRIES = sorted(n for n, spec in MODELS.items() if spec.asset is None and spec.random_config is None)


def test_every_family_has_entries_with_known_renderers():
    families = {
        "Qwen/Qwen3-30B-A3B",
        "mistralai/Mistral-7B-v0.3",
        "google/gemma-3-1b-pt",
        "openai/gpt-oss-20b",
        "deepseek-ai/DeepSeek-V3.1",
        "moonshotai/Kimi-K2-Thinking",
        "moonshotai/Kimi-K2-Instruct",
        "moonshotai/Kimi-K2-Instruct-0905",
    }
    assert families <= set(HUB_ENTRIES)
    for name in HUB_ENTRIES:
        assert MODELS[name].hub_id == name
        assert MODELS[name].renderer in RENDERERS, name


@pytest.mark.parametrize(
    "name, renderer",
    [
        ("Qwen/Qwen3-30B-A3B", "qwen3"),
        ("Qwen/Qwen3-30B-A3B-Instruct-2507", "qwen3_instruct"),
        ("openai/gpt-oss-20b", "gpt_oss_no_sysprompt"),
        ("deepseek-ai/DeepSeek-V3.1", "deepseekv3"),
        ("moonshotai/Kimi-K2-Thinking", "kimi_k2"),
        ("moonshotai/Kimi-K2-Instruct", "kimi_k2_instruct"),
        ("moonshotai/Kimi-K2-Instruct-0905", "kimi_k2_instruct"),
    ],
)
def test_hub_id_picks_the_renderer_and_resolves_to_a_download(monkeypatch, tmp_path, name, renderer):
    assert renderer_name_for(ModelOptions(name=name)) == renderer
    fetched = []
    monkeypatch.setattr(models, "_download", lambda repo: fetched.append(repo) or Path(tmp_path))
    where = resolve(name)
    assert fetched == [name] and where.kind == "safetensors" and where.path == tmp_path
