"""A GGUF file's tokenizer as a Hugging Face fast tokenizer, built from its metadata.

llama.cpp stores the vocabulary under `tokenizer.ggml.*`: the tokens in id order, their types
(1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), the BPE merges, the special
token ids, whether a BOS is prepended, and the chat template. For byte-level BPE vocabularies
(`tokenizer.ggml.model = "gpt2"`: SmolLM2, Qwen, Llama 3, DeepSeek, GPT-OSS conversions) the
tokenizer is rebuilt here with `tokenizers` alone: a BPE model over the tokens and merges,
GPT-2's byte-level pre-tokenizer and decoder, control tokens as special added tokens and
user-defined ones as plain added tokens. The result equals what transformers' own GGUF converter
builds (checked token for token in `tests/models/test_gguf_tokenizer.py`), without it: in
transformers 5.24 and 5.25 that converter imports torch, which jaxcook's base install lacks.

Other tokenizer models (SentencePiece-style `llama`, Gemma's) go through transformers' converter;
when that needs a package that is missing, the error says so and names the file.
"""

from __future__ import annotations

from pathlib import Path

CONTROL, USER_DEFINED = 3, 4


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def _special_tokens(reader, tokens: list[str]) -> dict[str, str]:
    named = {}
    for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        i = _field(reader, f"tokenizer.ggml.{key}_token_id")
        if i is not None:
            named[f"{role}_token"] = tokens[int(i)]
    return named


def byte_level_bpe(reader, path: Path):
    """The `PreTrainedTokenizerFast` of a `gpt2`-model GGUF vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = []
    for n, merge in enumerate(_field(reader, "tokenizer.ggml.merges", [])):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{path}: tokenizer.ggml.merges[{n}] = {merge!r} is not two tokens")
        merges.append((pair[0], pair[1]))
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="")
    tok = Tokenizer(bpe)
    prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix", False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    added = [
        AddedToken(t, special=ty == CONTROL, normalized=False)
        for t, ty in zip(tokens, types, strict=True)
        if ty in (CONTROL, USER_DEFINED)
    ]
    tok.add_tokens(added)
    special = _special_tokens(reader, tokens)
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and "bos_token" in special:
        bos = special["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A:0 {bos} $B:1", special_tokens=[(bos, vocab[bos])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A:0 $B:1")
    out = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    template = _field(reader, "tokenizer.chat_template")
    if template:
        out.chat_template = template
    return out


def load(path: str | Path):
    """The tokenizer stored in the GGUF file at `path`."""
    from gguf import GGUFReader

    path = Path(path)
    reader = GGUFReader(str(path))
    model = _field(reader, "tokenizer.ggml.model")
    if model is None:
        raise ValueError(f"{path}: no tokenizer in this GGUF file (tokenizer.ggml.model is missing)")
    if model == "gpt2":
        return byte_level_bpe(reader, path)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as e:
        raise ImportError(
            f"{path}: tokenizer.ggml.model={model!r} is converted by transformers' GGUF support, which "
            f"failed to import ({e}); install torch, or point model.name at a folder with tokenizer.json"
        ) from e
