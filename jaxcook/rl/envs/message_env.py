"""Message-level environments and the adapter that turns one into a token-level `Env`.

A `MessageEnv` speaks in chat messages: it opens with a conversation and answers each assistant
message with a reward and the whole conversation to continue from (`next_messages`, history
included: the env owns its history). `EnvFromMessageEnv` renders those conversations with a
renderer, parses sampled tokens back into messages, and handles what only the token level sees:

- sampling hit `max_tokens` (stop_reason "length") and `terminate_on_length`: the episode ends
  with `context_overflow_reward`, stop reason `max_tokens`, metric `max_tokens_reached`;
- the response did not end cleanly (`ParseTermination.MALFORMED`): `failed_parse_reward`,
  stop reason `parse_error` when `terminate_on_parse_error`, metric `parse_error`;
- the next prompt plus `max_generation_tokens` would exceed `max_trajectory_tokens`: the episode
  ends with the env's reward for this step plus `context_overflow_reward`, stop reason
  `context_overflow`, metric `context_overflow`; at the first prompt the env returns an
  `InitialObservationOverflow` with `context_overflow_reward`.

The three flags are reported (0 or 1) on every step so their means are rates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from jaxcook.renderers import Message, Renderer
from jaxcook.rl.types import (
    Action,
    ActionExtra,
    Env,
    InitialObservationOverflow,
    Logs,
    Metrics,
    Observation,
    StepResult,
    StopCondition,
    StopReason,
)
from jaxcook.types import ModelInput


@dataclass
class MessageStepResult:
    reward: float
    episode_done: bool
    next_messages: list[Message]  # the whole conversation to render as the next prompt
    metrics: Metrics = field(default_factory=dict)
    logs: Logs = field(default_factory=dict)


class MessageEnv(ABC):
    @abstractmethod
    async def initial_observation(self) -> list[Message]: ...

    @abstractmethod
    async def step(self, message: Message) -> MessageStepResult: ...


class EnvFromMessageEnv(Env):
    def __init__(
        self,
        renderer: Renderer,
        message_env: MessageEnv,
        *,
        failed_parse_reward: float = -1.0,
        terminate_on_parse_error: bool = True,
        max_trajectory_tokens: int | None = None,
        max_generation_tokens: int | None = None,
        context_overflow_reward: float = -0.1,
        terminate_on_length: bool = True,
    ):
        self.renderer = renderer
        self.message_env = message_env
        self.failed_parse_reward = failed_parse_reward
        self.terminate_on_parse_error = terminate_on_parse_error
        self.max_trajectory_tokens = max_trajectory_tokens
        self.max_generation_tokens = max_generation_tokens
        self.context_overflow_reward = context_overflow_reward
        self.terminate_on_length = terminate_on_length

    @property
    def stop_condition(self) -> StopCondition:
        return self.renderer.get_stop_sequences()

    def _overflows(self, ob: ModelInput) -> bool:
        if self.max_trajectory_tokens is None:
            return False
        return ob.length + (self.max_generation_tokens or 0) > self.max_trajectory_tokens

    async def initial_observation(self) -> tuple[Observation, StopCondition] | InitialObservationOverflow:
        ob = self.renderer.build_generation_prompt(await self.message_env.initial_observation())
        if self._overflows(ob):
            return InitialObservationOverflow(
                self.context_overflow_reward,
                {"context_overflow": 1.0},
                {"prompt_tokens": ob.length},
            )
        return ob, self.stop_condition

    def _end(
        self, reward: float, reason: str | None, metrics: Metrics, logs: Logs | None = None
    ) -> StepResult:
        return StepResult(
            reward,
            True,
            ModelInput.empty(),
            self.stop_condition,
            metrics,
            dict(logs or {}),
            stop_reason=reason,
        )

    async def step(self, action: Action, *, extra: ActionExtra | None = None) -> StepResult:
        flags: Metrics = {"max_tokens_reached": 0.0, "parse_error": 0.0, "context_overflow": 0.0}
        if (extra or {}).get("stop_reason") == "length" and self.terminate_on_length:
            flags["max_tokens_reached"] = 1.0
            return self._end(self.context_overflow_reward, StopReason.MAX_TOKENS, flags)
        message, termination = self.renderer.parse_response(list(action))
        parse_penalty = 0.0
        if not termination.is_clean:
            flags["parse_error"] = 1.0
            if self.terminate_on_parse_error:
                return self._end(self.failed_parse_reward, StopReason.PARSE_ERROR, flags)
            parse_penalty = self.failed_parse_reward
        result = await self.message_env.step(message)
        reward = result.reward + parse_penalty
        metrics = {**result.metrics, **flags}
        if result.episode_done:
            return self._end(reward, None, metrics, result.logs)  # the rollout names the reason
        next_ob = self.renderer.build_generation_prompt(result.next_messages)
        if self._overflows(next_ob):
            metrics["context_overflow"] = 1.0
            return self._end(
                reward + self.context_overflow_reward, StopReason.CONTEXT_OVERFLOW, metrics, result.logs
            )
        return StepResult(reward, False, next_ob, self.stop_condition, metrics, dict(result.logs))
