"""Scorers: how well a sampled response matches a reference, each a score in [0, 1] per pair.

    exact_match          1 if response and reference are equal after collapsing whitespace
                         (runs of spaces/newlines -> one space, ends stripped); case-sensitive.
    contains             1 if the (whitespace-collapsed) reference occurs in the response.
    regex                1 if the reference, read as a Python regular expression, matches anywhere
                         in the response (`re.search`).
    math                 1 if the response's answer equals the reference as `rl.envs.grading`
                         compares answers (fractions, LaTeX, thousands commas); the answer is the
                         last `\\boxed{}`, else the last number written.
    semantic_similarity  cosine similarity of the two texts' embeddings, clipped to [0, 1], from
                         a sentence-embedding model when one is given (a local transformers folder:
                         mean of the last hidden states over the tokens, as sentence-transformers
                         pools); without one, the lexical fallback: the cosine of the two texts'
                         bag-of-words count vectors (lowercased `\\w+` words). The metric name says
                         which was used: `semantic_similarity_embedding` / `semantic_similarity_lexical`.

A scorer maps lists of responses and references to a list of scores: `scorer(responses, refs)`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from jaxcook.rl.envs.grading import answers_match, extract_boxed, extract_last_number

Scorer = Callable[[Sequence[str], Sequence[str]], list[float]]


def _collapse(text: str) -> str:
    return " ".join(text.split())


def exact_match(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    return [float(_collapse(r) == _collapse(ref)) for r, ref in zip(responses, references, strict=True)]


def contains(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    return [float(_collapse(ref) in _collapse(r)) for r, ref in zip(responses, references, strict=True)]


def regex(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    scores = []
    for r, pattern in zip(responses, references, strict=True):
        try:
            scores.append(float(re.search(pattern, r) is not None))
        except re.error as e:
            raise ValueError(
                f"regex scorer: reference {pattern!r} is not a valid regular expression ({e})"
            ) from e
    return scores


def math_answer(response: str) -> str | None:
    """The answer a response gives: its last `\\boxed{}`, else the last number in it."""
    boxed = extract_boxed(response)
    return boxed if boxed is not None else extract_last_number(response)


def math_scorer(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    return [float(answers_match(math_answer(r), ref)) for r, ref in zip(responses, references, strict=True)]


def _words(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def lexical_similarity(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    """Cosine of bag-of-words count vectors; 0 when either text has no word."""
    scores = []
    for r, ref in zip(responses, references, strict=True):
        a, b = _words(r), _words(ref)
        dot = sum(a[w] * b[w] for w in a.keys() & b.keys())
        norm = math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values()))
        scores.append(dot / norm if norm else 0.0)
    return scores


class EmbeddingSimilarity:
    """Cosine similarity of mean-pooled last hidden states of a local transformers model folder
    (a sentence-embedding model such as all-MiniLM-L6-v2, downloaded beforehand)."""

    def __init__(self, model_path: str | Path, *, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not Path(model_path).is_dir():
            raise ValueError(f"semantic_similarity: embedding model {model_path}: no such folder")
        self.torch, self.batch_size = torch, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.model = AutoModel.from_pretrained(str(model_path), dtype=torch.float32).eval()

    def embed(self, texts: Sequence[str]):
        """[N, D] unit vectors: the attention-masked mean of the last hidden states."""
        torch, out = self.torch, []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, return_tensors="pt")
            with torch.no_grad():
                hidden_BTD = self.model(**batch).last_hidden_state
            mask_BT1 = batch["attention_mask"].unsqueeze(-1).to(hidden_BTD.dtype)
            mean_BD = (hidden_BTD * mask_BT1).sum(1) / mask_BT1.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(mean_BD, dim=-1))
        return torch.cat(out).numpy()

    def __call__(self, responses: Sequence[str], references: Sequence[str]) -> list[float]:
        a, b = self.embed(responses), self.embed(references)
        return [min(1.0, max(0.0, float(x))) for x in (a * b).sum(-1)]


SCORERS: dict[str, Scorer] = {
    "exact_match": exact_match,
    "contains": contains,
    "regex": regex,
    "math": math_scorer,
    "semantic_similarity": lexical_similarity,  # replaced by EmbeddingSimilarity given a model
}


def get_scorer(name: str, *, embedding_model: str | None = None) -> tuple[str, Scorer]:
    """(metric name, scorer) for a scorer name; `semantic_similarity` uses `embedding_model` when
    given and names itself after the backend it used."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid scorers: {', '.join(SCORERS)}")
    if name == "semantic_similarity":
        if embedding_model:
            return "semantic_similarity_embedding", EmbeddingSimilarity(embedding_model)
        return "semantic_similarity_lexical", lexical_similarity
    return name, SCORERS[name]
