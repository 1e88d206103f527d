"""A tiny random decoder and random datums for engine tests."""

import numpy as np
from flax import nnx

from jaxcook.lora import LoraConfig
from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.types import Datum, ModelInput

TINY = ModelConfig(
    model_type="llama",
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    tie_word_embeddings=False,
)


def tiny_model(lora: LoraConfig | None = None, seed: int = 0) -> Decoder:
    return Decoder(TINY, lora=lora, rngs=nnx.Rngs(params=seed, lora=seed + 1))


def random_datums(n: int, lengths=(5, 30), seed: int = 0, **extra_inputs) -> list[Datum]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(*lengths))
        tokens = rng.integers(0, TINY.vocab_size, length + 1)
        inputs = {"target_tokens": tokens[1:], "weights": rng.random(length).astype(np.float32)}
        for key, fn in extra_inputs.items():
            inputs[key] = fn(rng, length)
        out.append(Datum(ModelInput.from_ints(tokens[:-1].tolist()), inputs))
    return out
