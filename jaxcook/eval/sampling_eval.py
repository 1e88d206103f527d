"""The sampling evaluator: sample a reply to every prompt of a JSONL file, score it against its reference.

The file is a prompt file (`jaxcook.eval.prompts`: "prompt", "messages" or "text") whose records
also hold a "reference" string. Metrics, the mean over the file of each scorer
(`jaxcook.eval.scorers`), are `eval/<name>/<scorer>`, plus `eval/<name>/response_tokens` (mean
sampled tokens). From the command line an evaluator is a spec string:

    evals=data/qa.jsonl                                   # exact_match, greedy, 128 tokens
    evals=data/qa.jsonl:contains+math:max_tokens=64       # scorers joined by +, then key=value
    evals='["qa.jsonl:exact_match:name=qa", "gsm.jsonl:math:limit=50"]'   # several (JSON list)

The keys are the fields of `SamplingEvalConfig` (typed like every override).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jaxcook.data.errors import DataFormatError
from jaxcook.eval.prompts import read_prompts
from jaxcook.eval.scorers import SCORERS, get_scorer
from jaxcook.logging import logtree, trace
from jaxcook.types import SamplingParams

EMBEDDING_MODEL_ENV = "JAXCOOK_EMBEDDING_MODEL"  # default sentence-embedding model folder


@dataclass(frozen=True, kw_only=True)
class SamplingEvalConfig:
    path: str  # JSONL of {prompt | messages | text, reference}
    scorers: tuple[str, ...] = ("exact_match",)
    name: str | None = None  # metric area eval/<name>/...; None = the file's stem
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    limit: int | None = None  # the first `limit` records only
    batch_size: int = 16  # prompts per sampler call
    seed: int = 0
    embedding_model: str | None = None  # for semantic_similarity; None = $JAXCOOK_EMBEDDING_MODEL

    @property
    def metric_name(self) -> str:
        return self.name or Path(self.path).stem


def parse_eval_spec(spec: str) -> SamplingEvalConfig:
    """`PATH[:scorer+scorer...][:key=value...]` -> a config (errors name the spec and the key)."""
    from jaxcook.config import OverrideError, apply_overrides

    path, *parts = spec.split(":")
    if not path:
        raise ValueError(f"evals: {spec!r} has no file path (expected PATH[:scorer+...][:key=value...])")
    overrides = []
    for part in parts:
        if "=" in part:
            overrides.append(part)
        else:
            overrides.append(f"scorers={','.join(part.split('+'))}")
    try:
        cfg = apply_overrides(SamplingEvalConfig(path=path), overrides)
    except OverrideError as e:
        raise ValueError(f"evals: {spec!r}: {e}") from e
    if not Path(cfg.path).is_file():
        raise ValueError(f"evals: {spec!r}: {cfg.path}: no such file")
    unknown = [s for s in cfg.scorers if s not in SCORERS]
    if unknown or not cfg.scorers:
        raise ValueError(f"evals: {spec!r}: unknown scorer {unknown}; valid scorers: {', '.join(SCORERS)}")
    return cfg


class SamplingEvaluator:
    """`evaluator(training_client) -> metrics` on the client's current weights; `evaluate(sampler)`
    on any `SamplingClient`. `rows` holds the last evaluation's prompts, responses and scores."""

    def __init__(self, cfg: SamplingEvalConfig, renderer, tokenizer):
        self.cfg, self.renderer, self.tokenizer = cfg, renderer, tokenizer
        records = read_prompts(cfg.path)
        self.records = records[: cfg.limit] if cfg.limit is not None else records
        self.references = []
        for r in self.records:
            ref = r.fields.get("reference")
            if isinstance(ref, (int, float)) and not isinstance(ref, bool):
                ref = str(ref)
            if not isinstance(ref, str):
                raise DataFormatError(f"{r.where}: an eval record needs a string 'reference'")
            self.references.append(ref)
        embedding = cfg.embedding_model or os.environ.get(EMBEDDING_MODEL_ENV) or None
        self.scorers = [get_scorer(name, embedding_model=embedding) for name in cfg.scorers]
        self.rows: list[dict] = []

    def __call__(self, training_client) -> dict[str, float]:
        if hasattr(training_client, "save_weights_and_get_sampling_client"):  # the port's call
            sampler = training_client.save_weights_and_get_sampling_client()
        else:
            from jaxcook.sampling import LocalSamplingClient

            sampler = LocalSamplingClient.from_training_client(training_client, seed=self.cfg.seed)
        try:
            return self.evaluate(sampler)
        finally:
            if hasattr(sampler, "close"):
                sampler.close()

    def evaluate(self, sampler) -> dict[str, float]:
        with trace.scope("eval/sampling", name=self.cfg.metric_name):
            metrics = self._evaluate(sampler)
        self._log_tree(metrics)
        return metrics

    def _log_tree(self, metrics: dict[str, float]) -> None:
        """The metrics and every sample (prompt, reference, response, scores) in the active log tree."""
        if not logtree.active():
            return
        with logtree.scope(f"eval/{self.cfg.metric_name}: {len(self.rows)} samples from {self.cfg.path}"):
            logtree.metrics_table(metrics)
            rows = []
            for record, ref, row in zip(self.records, self.references, self.rows, strict=True):
                asked = record.messages[-1]["content"] if record.messages is not None else record.text
                rows.append({"prompt": asked, "reference": ref, "response": row["response"], **row["scores"]})
            logtree.table(rows)

    def _evaluate(self, sampler) -> dict[str, float]:
        cfg = self.cfg
        chat = SamplingParams(
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            seed=cfg.seed,
            stop=self.renderer.get_stop_sequences(),
        )
        raw = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
        responses, lengths = [], []
        for i in range(0, len(self.records), cfg.batch_size):
            batch = self.records[i : i + cfg.batch_size]
            prompts = [r.model_input(self.renderer, self.tokenizer) for r in batch]
            params = [chat if r.messages is not None else raw for r in batch]
            for record, response in zip(batch, sampler.sample_many(prompts, 1, params).result(), strict=True):
                tokens = response.sequences[0].tokens
                if record.messages is not None:
                    content = self.renderer.parse_response(tokens)[0].get("content")
                    text = content if isinstance(content, str) else self.tokenizer.decode(tokens)
                else:
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                responses.append(text)
                lengths.append(len(tokens))
        area = f"eval/{cfg.metric_name}"
        metrics = {f"{area}/response_tokens": sum(lengths) / len(lengths)}
        scores = {}
        for metric, scorer in self.scorers:
            scores[metric] = scorer(responses, self.references)
            metrics[f"{area}/{metric}"] = sum(scores[metric]) / len(responses)
        self.rows = [
            {
                **record.fields,
                "response": response,
                "scores": {m: s[i] for m, s in scores.items()},
            }
            for i, (record, response) in enumerate(zip(self.records, responses, strict=True))
        ]
        return metrics


def evaluator_factories(specs) -> list:
    """Factories `(setup, data) -> SamplingEvaluator` for a workflow's `extra_evaluators`, one per
    spec string (parsed now, so a bad spec fails before the model loads)."""
    configs = [parse_eval_spec(s) if isinstance(s, str) else s for s in specs]
    return [
        lambda setup, data, cfg=cfg: SamplingEvaluator(cfg, setup.renderer, setup.tokenizer)
        for cfg in configs
    ]
