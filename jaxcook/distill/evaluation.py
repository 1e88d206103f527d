"""Held-out teacher KL: sample the student on prompts it never trained on, score with the teacher.

    metrics, samples = evaluate_teacher_kl(sampler, renderer, [(teacher, prompts)], max_tokens=128)
    metrics["test/teacher_kl"]             # mean over sampled tokens of log p_student - log p_teacher
    metrics["test/teacher_kl/dataset_0"]   # the same over the prompts of source 0
    metrics["test/teacher_nll"]            # mean -log p_teacher of the student's tokens

Each prompt is sampled once at `temperature` (1 by default: the estimate of KL(student || teacher)
is unbiased only for samples of the student's own distribution). The student's log-probs are the
sampler's; the teacher scores the completion after the prompt rendered its own way (its renderer,
its system prompt). With the same `seed` two evaluations share their random numbers, so a change
between them is the weights', not the dice's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxcook.distill.reverse_kl import teacher_kl_metrics
from jaxcook.renderers import Message
from jaxcook.types import SamplingParams


@dataclass(frozen=True)
class ScoredSample:
    """One held-out completion: its prompt, tokens, and both models' log-probs of each token."""

    source: int
    prompt: list[Message]
    tokens: list[int]
    student_lp: np.ndarray
    teacher_lp: np.ndarray
    stop_reason: str


def sample_prompts(
    sampler, renderer, prompts: Sequence[Sequence[Message]], *, max_tokens: int, temperature: float, seed: int
):
    """One completion (a `SampledSequence`) per prompt, rendered with `renderer`; prompt i is
    sampled with seed `prompt_seed(seed, i)`."""
    if not prompts:
        return []
    inputs = [renderer.build_generation_prompt(list(p)) for p in prompts]
    stop = renderer.get_stop_sequences()
    # One seed per prompt: requests that share a seed share their random numbers, which would
    # correlate the samples of similar prompts.
    params = [
        SamplingParams(max_tokens=max_tokens, temperature=temperature, stop=stop, seed=prompt_seed(seed, i))
        for i in range(len(inputs))
    ]
    return [r.sequences[0] for r in sampler.sample_many(inputs, 1, params).result()]


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed of prompt `index` of a run seeded `seed` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def evaluate_teacher_kl(
    sampler,
    renderer,
    sources: Sequence[tuple[object, Sequence[Sequence[Message]]]],
    *,
    max_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    prefix: str = "test",
) -> tuple[dict[str, float], list[ScoredSample]]:
    """`sources[k] = (teacher, prompts)`: sample each prompt once from `sampler`, score with teacher k."""
    samples: list[ScoredSample] = []
    for k, (teacher, prompts) in enumerate(sources):
        seqs = sample_prompts(
            sampler, renderer, prompts, max_tokens=max_tokens, temperature=temperature, seed=seed
        )
        if not seqs:
            continue
        teacher_lp = teacher.score_completions(prompts, [s.tokens for s in seqs])
        for p, s, t in zip(prompts, seqs, teacher_lp):
            student = np.asarray(s.logprobs, np.float64)
            samples.append(ScoredSample(k, list(p), list(s.tokens), student, np.asarray(t), s.stop_reason))
    if not samples:
        return {}, []
    sums = [(float((s.student_lp - s.teacher_lp).sum()), float(len(s.tokens))) for s in samples]
    metrics = teacher_kl_metrics(sums, [s.source for s in samples], prefix=f"{prefix}/teacher_kl")
    n_tokens = sum(len(s.tokens) for s in samples)
    metrics[f"{prefix}/teacher_nll"] = -float(sum(s.teacher_lp.sum() for s in samples)) / n_tokens
    metrics[f"{prefix}/student_nll"] = -float(sum(s.student_lp.sum() for s in samples)) / n_tokens
    metrics[f"{prefix}/ac_tokens_per_sample"] = n_tokens / len(samples)
    metrics[f"{prefix}/truncated"] = sum(s.stop_reason == "length" for s in samples) / len(samples)
    return metrics, samples
