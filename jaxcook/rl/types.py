"""RL types: environments, transitions, trajectories, groups of them, and datasets of groups.

An `Env` is single-use: one episode, then thrown away. An `EnvGroupBuilder` makes the G envs of
one group (usually G copies of one problem) and may add group-level rewards after the rollouts
(pairwise preference models, multi-agent games). A batch is a list of builders from
`RLDataset.get_batch(i)`. Advantages are computed within each group (`data_processing.py`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, TypedDict

from jaxcook.ports import StopCondition, TokensWithLogprobs
from jaxcook.types import ModelInput

Action = list[int]
Observation = ModelInput
Logprobs = list[float]
Metrics = dict[str, float | int]
Logs = dict[str, str | int | float]

__all__ = [
    "Action",
    "ActionExtra",
    "Env",
    "EnvGroupBuilder",
    "InitialObservationOverflow",
    "Logprobs",
    "Logs",
    "Metrics",
    "Observation",
    "RLDataset",
    "RLDatasetBuilder",
    "RolloutError",
    "StepResult",
    "StopCondition",
    "StopReason",
    "Trajectory",
    "TrajectoryGroup",
    "Transition",
]


class ActionExtra(TypedDict, total=False):
    """What the rollout tells `Env.step` besides the tokens: why sampling stopped."""

    stop_reason: Literal["stop", "length"]


class StopReason(StrEnum):
    """Why an episode ended; logged one-hot as `env/<tag>/stop/<reason>`."""

    COMPLETED = "completed"  # the env said done after a cleanly stopped action
    MAX_TOKENS = "max_tokens"  # the last action hit max_tokens (no stop token)
    MAX_TURNS = "max_turns"
    CONTEXT_OVERFLOW = "context_overflow"  # observation + generation budget > max context
    PARSE_ERROR = "parse_error"


@dataclass(frozen=True)
class InitialObservationOverflow:
    """Returned by `Env.initial_observation` instead of `(ob, stop)` when the prompt does not fit.

    The rollout ends without sampling; the trajectory gets `reward` and no transitions.
    """

    reward: float
    metrics: Metrics = field(default_factory=dict)
    logs: Logs = field(default_factory=dict)


@dataclass
class StepResult:
    reward: float
    episode_done: bool
    next_observation: Observation
    next_stop_condition: StopCondition
    metrics: Metrics = field(default_factory=dict)
    logs: Logs = field(default_factory=dict)
    # The env's own reason for ending the episode (e.g. parse_error); None = let the rollout decide.
    stop_reason: str | None = None


class Env(ABC):
    """One episode. Call `initial_observation` once, then `step` until `episode_done`."""

    @abstractmethod
    async def initial_observation(
        self,
    ) -> tuple[Observation, StopCondition] | InitialObservationOverflow: ...

    @abstractmethod
    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult: ...


@dataclass
class Transition:
    ob: Observation
    ac: TokensWithLogprobs
    reward: float
    episode_done: bool
    metrics: Metrics = field(default_factory=dict)
    logs: Logs = field(default_factory=dict)


@dataclass
class Trajectory:
    """One episode.

    `terminal_reward` is reward the rollout itself assigned, not attached to any action: the
    context-overflow reward (including an `InitialObservationOverflow`, which leaves no
    transitions). `metrics` are per-episode bookkeeping (e.g. `nan_rewards`), averaged over
    episodes in the logged metrics.
    """

    transitions: list[Transition]
    final_ob: Observation
    stop_reason: str | None = None
    terminal_reward: float = 0.0
    metrics: Metrics = field(default_factory=dict)

    def total_step_reward(self) -> float:
        return float(sum(t.reward for t in self.transitions)) + self.terminal_reward


@dataclass(frozen=True)
class RolloutError:
    """A rollout attempt that raised (kept so the batch metrics can count it)."""

    index: int  # position of the env in its group
    attempt: int  # 0 = first try
    error_type: str
    message: str


@dataclass
class TrajectoryGroup:
    """The G trajectories of one group, their group-level rewards/metrics and what went wrong.

    With `MinViableGroup` some rollouts may have failed, so G can be smaller than the builder's.
    """

    trajectories_G: list[Trajectory]
    final_rewards_G: list[float]
    metrics_G: list[Metrics]
    rollout_errors: list[RolloutError] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.trajectories_G)
        if len(self.final_rewards_G) != n or len(self.metrics_G) != n:
            raise ValueError(
                f"TrajectoryGroup: {n} trajectories, {len(self.final_rewards_G)} final rewards, "
                f"{len(self.metrics_G)} metric dicts; all must match"
            )

    def get_total_rewards(self) -> list[float]:
        """Per trajectory: the sum of its step rewards (+ terminal reward) plus its group reward."""
        return [
            traj.total_step_reward() + float(final)
            for traj, final in zip(self.trajectories_G, self.final_rewards_G, strict=True)
        ]


class EnvGroupBuilder(ABC):
    """Makes the envs of one group. Keep it picklable (plain data + module-level callables)."""

    @abstractmethod
    async def make_envs(self) -> Sequence[Env]: ...

    async def compute_group_rewards(
        self, trajectory_group: list[Trajectory], env_group: Sequence[Env]
    ) -> list[tuple[float, Metrics]]:
        """Group-level (final) reward and metrics per trajectory; zero by default."""
        return [(0.0, {}) for _ in trajectory_group]

    async def cleanup(self) -> None:
        """Release anything `make_envs` acquired; called once after the group's rollouts."""
        return None

    def logging_tags(self) -> list[str]:
        """Tags under which this group's metrics are also logged (`env/<tag>/...`)."""
        return []


class RLDataset(ABC):
    """A sequence of batches; batch `i` is a list of group builders (one per problem)."""

    @abstractmethod
    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]: ...

    @abstractmethod
    def __len__(self) -> int: ...


class RLDatasetBuilder(ABC):
    """Config object that builds the train dataset and an optional test dataset."""

    @abstractmethod
    async def __call__(self) -> tuple[RLDataset, RLDataset | None]: ...
