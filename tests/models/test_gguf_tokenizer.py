"""GGUF vocabularies rebuilt by `jaxcook.models.gguf_tokenizer` equal transformers' own conversion.

The base install has no torch, and transformers' GGUF converter imports it (5.24 and 5.25), so the
embedded default's tokenizer (SmolLM2's byte-level BPE) is rebuilt from the metadata with
`tokenizers` alone. transformers (with torch, as in the test environment) is the reference: the
whole `tokenizer.json`, the special tokens and the chat template must match, and so must the ids
of text, special tokens and a rendered chat.
"""

import json

import pytest

from jaxcook import assets
from jaxcook.models import gguf_tokenizer

gguf = pytest.importorskip("gguf")
pytest.importorskip("torch")  # transformers' converter, the reference, needs it

TEXTS = [
    "Hello world 12345",
    "  leading spaces\n\n\ttabs and a <|im_start|>user\nturn<|im_end|>",
    "héllo 世界 🙂 naïve café",
    "<repo_name>x<file_sep>y def f(a, b):\n    return a+b",
]


def reference(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def assert_same(mine, ref):
    assert json.loads(mine.backend_tokenizer.to_str()) == json.loads(ref.backend_tokenizer.to_str())
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "chat_template"):
        assert getattr(mine, attr) == getattr(ref, attr), attr
    for text in TEXTS:
        assert mine(text)["input_ids"] == ref(text)["input_ids"], text
        assert mine.decode(mine(text)["input_ids"]) == ref.decode(ref(text)["input_ids"])


def test_smollm2_tokenizer_equals_transformers_conversion():
    path = assets.fetch_file("smollm2-135m-instruct-gguf")
    mine, ref = gguf_tokenizer.load(path), reference(path)
    assert_same(mine, ref)
    chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    assert mine.apply_chat_template(chat, tokenize=True) == ref.apply_chat_template(chat, tokenize=True)
    assert len(mine) == 49152


def write_vocab(path, *, merges=None, add_bos=True):
    """A byte-level BPE vocabulary: the 256 byte symbols, two merges, a control token (BOS) and a
    user-defined one; a BOS prepended when `add_bos`."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    tokens = ["<s>", *symbols, "he", "hel", "<tool>"]
    types = [3] + [1] * len(symbols) + [1, 1, 4]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges if merges is not None else ["h e", "he l"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("add_bos", [True, False])
def test_bos_and_user_defined_tokens_match_transformers(tmp_path, add_bos):
    path = write_vocab(tmp_path / "v.gguf", add_bos=add_bos)
    mine, ref = gguf_tokenizer.load(path), reference(path)
    assert mine("hello <tool>")["input_ids"] == ref("hello <tool>")["input_ids"]
    assert (mine("hello")["input_ids"][0] == 0) is add_bos
    assert mine.convert_ids_to_tokens(mine("hello", add_special_tokens=False)["input_ids"])[0] == "hel"


def test_a_bad_merge_names_the_file_and_the_entry(tmp_path):
    path = write_vocab(tmp_path / "bad.gguf", merges=["h e", "hel"])
    error = r"bad\.gguf: tokenizer\.ggml\.merges\[1\] = 'hel' is not two tokens"
    with pytest.raises(ValueError, match=error):
        gguf_tokenizer.load(path)


def test_a_file_without_a_tokenizer_is_a_clear_error(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "none.gguf"), "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"none\.gguf: no tokenizer in this GGUF file"):
        gguf_tokenizer.load(tmp_path / "none.gguf")
