"""A character-level tokenizer for the tiny decoder's 97-token vocabulary, and a full-forward
greedy/log-prob reference (no KV cache) to check the sampler against."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ALPHABET = "\n " + "".join(chr(c) for c in range(33, 126))  # 95 characters: ids 0..94
EOS = 95  # "</s>"
AB = 96  # one token that spells "ab": a second tokenisation of "ab" (a + b is the other)


class CharTokenizer:
    """ids 0..94 are newline, space and the printable ASCII characters 33..125; 95 is EOS;
    96 is "ab"."""

    eos_token_id = EOS
    bos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ALPHABET.index(c) for c in text]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        pieces = {EOS: "" if skip_special_tokens else "</s>", AB: "ab"}
        return "".join(pieces.get(int(i), ALPHABET[int(i)] if int(i) < EOS else "") for i in ids)


@nnx.jit
def _logprobs(model, tokens_BT):
    return jax.nn.log_softmax(model.logits(tokens_BT), axis=-1)


def full_forward_logprobs(model, tokens, pad_to: int = 64) -> np.ndarray:
    """log softmax of the full-sequence logits [T, V] (no cache). Right padding to a fixed
    length (one compile) changes nothing before it: attention is causal."""
    padded = np.zeros((1, max(pad_to, len(tokens))), np.int32)
    padded[0, : len(tokens)] = tokens
    return np.asarray(_logprobs(model, jnp.asarray(padded)))[0, : len(tokens)]


def greedy_reference(model, prompt, n: int) -> tuple[list[int], list[float]]:
    """Argmax decoding with a full forward at every step (no cache): tokens and their logprobs."""
    seq, lps = list(prompt), []
    for _ in range(n):
        lp = full_forward_logprobs(model, seq)[-1]
        tok = int(np.argmax(lp))
        seq.append(tok)
        lps.append(float(lp[tok]))
    return seq[len(prompt) :], lps
