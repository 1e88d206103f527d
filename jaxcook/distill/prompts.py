"""Prompt-only environments for on-policy distillation: one assistant turn, reward 0.

The student answers each prompt (`group_size` samples per prompt); the env pays nothing, so every
advantage comes from the teacher (reverse-KL shaping, `jaxcook.distill.on_policy`). The prompt
messages travel with the trajectory as JSON in `transition.logs["prompt_messages"]`
(`prompt_messages_of(trajectory)`), so a teacher with another renderer can re-render them.

Prompts come from the conversation datasets the SFT builders hold in memory (`reasoning_gym_math`,
`tinker_conversations`, a `.jsonl` file; see `jaxcook.data.registry`): a prompt is a conversation
up to its first assistant message. Each builder's own held-out split (`test_size`, `seed`) gives
the evaluation prompts, so training never samples a held-out prompt.

Several sources mix in one batch (multi-teacher distillation): batch i is batch i of every source
concatenated, and the groups of source k are tagged `dataset_k` (their metrics are logged under
`env/dataset_k/...`; the teacher-KL shaper routes them to teacher k).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from jaxcook.renderers import Message, Renderer
from jaxcook.rl.envs.dataset_builder import EnvDatasetBuilder
from jaxcook.rl.envs.problem import ProblemDataset
from jaxcook.rl.types import (
    Action,
    ActionExtra,
    Env,
    EnvGroupBuilder,
    Observation,
    RLDataset,
    StepResult,
    StopCondition,
    Trajectory,
)
from jaxcook.types import ModelInput

PROMPT_LOG_KEY = "prompt_messages"


@dataclass(frozen=True, kw_only=True)
class PromptSource:
    """Where prompts come from: an SFT dataset name or `.jsonl` path and its builder's fields."""

    dataset: str = "reasoning_gym_math"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    groups_per_batch: int | None = None  # None = the env builder's groups_per_batch


def dataset_tag(index: int) -> str:
    return f"dataset_{index}"


def conversation_prompt(messages: Sequence[Message], where: str) -> list[Message]:
    """The messages before the first assistant message (they must end with a user message)."""
    prompt = []
    for m in messages:
        if m["role"] == "assistant":
            break
        prompt.append(dict(m))
    if not prompt or prompt[-1]["role"] != "user":
        roles = [m["role"] for m in messages]
        raise ValueError(f"{where}: no user message before the first assistant message (roles {roles})")
    return prompt


def load_prompts(source: PromptSource, *, seed: int = 0) -> tuple[list[list[Message]], list[list[Message]]]:
    """(train prompts, held-out prompts) of `source`, split as its SFT builder splits records."""
    from jaxcook.data.builders import InMemoryChatBuilder, split_records
    from jaxcook.data.messages import parse_conversation
    from jaxcook.data.registry import get_sft_builder

    builder = get_sft_builder(source.dataset, **{"seed": seed, **source.dataset_options})
    if not isinstance(builder, InMemoryChatBuilder):
        raise ValueError(
            f"prompt source {source.dataset!r} ({type(builder).__name__}) is not held in memory; "
            "prompt-only envs read reasoning_gym_math, tinker_conversations or a .jsonl file"
        )
    records, _, label = builder.load_records()
    train, test = split_records(records, test_size=builder.test_size, seed=builder.seed, label=label)

    def prompts(subset):
        out = []
        for i in range(len(subset)):
            where, raw = subset[i]
            out.append(conversation_prompt(parse_conversation(raw, where), where))
        return out

    return prompts(train), prompts(test)


def prompt_messages_of(trajectory: Trajectory) -> list[Message]:
    """The prompt messages a `PromptOnlyEnv` logged on the trajectory's first transition."""
    if not trajectory.transitions or PROMPT_LOG_KEY not in trajectory.transitions[0].logs:
        raise KeyError(
            f"the trajectory has no logs[{PROMPT_LOG_KEY!r}]: its env did not record its prompt "
            "messages (use a PromptOnlyEnv, or a teacher with the student's renderer and no system prompt)"
        )
    return json.loads(trajectory.transitions[0].logs[PROMPT_LOG_KEY])


class PromptOnlyEnv(Env):
    """Render `messages` as the prompt; any answer ends the episode with reward 0."""

    def __init__(self, messages: Sequence[Message], renderer: Renderer):
        self.messages, self.renderer = list(messages), renderer

    async def initial_observation(self) -> tuple[Observation, StopCondition]:
        return self.renderer.build_generation_prompt(self.messages), self.renderer.get_stop_sequences()

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        return StepResult(
            reward=0.0,
            episode_done=True,
            next_observation=ModelInput.empty(),
            next_stop_condition=self.renderer.get_stop_sequences(),
            logs={PROMPT_LOG_KEY: json.dumps(self.messages)},
        )


@dataclass(frozen=True)
class PromptGroupBuilder(EnvGroupBuilder):
    """`num_envs` samples of one prompt, tagged with their source."""

    messages: tuple[Message, ...]
    renderer: Any  # a Renderer
    num_envs: int
    tag: str = dataset_tag(0)

    async def make_envs(self) -> Sequence[Env]:
        return [PromptOnlyEnv(self.messages, self.renderer) for _ in range(self.num_envs)]

    def logging_tags(self) -> list[str]:
        return [self.tag]


def _group(renderer, group_size: int, tag: str, messages: list[Message]) -> PromptGroupBuilder:
    return PromptGroupBuilder(tuple(messages), renderer, group_size, tag)


class ConcatBatchesDataset(RLDataset):
    """Batch i is batch i of every dataset, concatenated; as many batches as the shortest has."""

    def __init__(self, datasets: Sequence[RLDataset]):
        if not datasets:
            raise ValueError("ConcatBatchesDataset needs at least one dataset")
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return min(len(d) for d in self.datasets)

    def get_batch(self, index: int) -> list[EnvGroupBuilder]:
        return [b for d in self.datasets for b in d.get_batch(index)]


def as_source(source: PromptSource | dict) -> PromptSource:
    if isinstance(source, PromptSource):
        return source
    if not isinstance(source, dict):
        raise TypeError(f"a prompt source is a PromptSource or a dict of its fields, got {source!r}")
    return PromptSource(**source)


@dataclass(frozen=True, kw_only=True)
class PromptDatasetBuilder(EnvDatasetBuilder):
    """Prompt-only train batches from `sources` (PromptSource or dicts of its fields; `()` = one
    default source); no test set (distillation evaluates the teacher KL itself)."""

    sources: tuple[Any, ...] = ()

    def resolved_sources(self) -> list[PromptSource]:
        return [as_source(s) for s in self.sources] or [PromptSource()]

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        renderer = self.get_renderer()
        datasets = []
        for k, source in enumerate(self.resolved_sources()):
            train, _ = load_prompts(source, seed=self.seed)
            gpb = source.groups_per_batch or self.groups_per_batch
            if gpb < 1:
                raise ValueError(f"sources[{k}].groups_per_batch must be >= 1, got {gpb}")
            make = partial(_group, renderer, self.group_size, dataset_tag(k))
            datasets.append(ProblemDataset(train, make, groups_per_batch=gpb, seed=self.seed + k))
        return ConcatBatchesDataset(datasets), None
