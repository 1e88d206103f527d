"""The policy ports RL code is written against: token and message completers.

Provisional home: the lead moves these into `jaxcook/ports.py`; `jaxcook.rl` re-exports them so
imports keep working. Only what the RL library needs is declared here.

The real `TokenCompleter` batches many concurrent calls into one sampler call, so callers issue
their calls concurrently (`asyncio.gather` over a group or a batch), never one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from jaxcook.types import ModelInput

if TYPE_CHECKING:
    from jaxcook.renderers import Message

StopCondition = list[str] | list[int]


@dataclass(frozen=True)
class TokensWithLogprobs:
    """One sampled completion: its tokens, their log-probabilities (if returned) and why it stopped.

    `stop_reason` is "stop" when a stop sequence or EOS ended it, "length" when `max_tokens` did.
    """

    tokens: list[int]
    maybe_logprobs: list[float] | None
    stop_reason: Literal["stop", "length"] = "stop"

    def __post_init__(self):
        if self.maybe_logprobs is not None and len(self.maybe_logprobs) != len(self.tokens):
            raise ValueError(
                f"TokensWithLogprobs: {len(self.tokens)} tokens but {len(self.maybe_logprobs)} logprobs"
            )
        if self.stop_reason not in ("stop", "length"):
            raise ValueError(f"TokensWithLogprobs: stop_reason {self.stop_reason!r} not 'stop'|'length'")

    @property
    def logprobs(self) -> list[float]:
        if self.maybe_logprobs is None:
            raise ValueError("this completion carries no logprobs (the completer was asked for none)")
        return self.maybe_logprobs


@runtime_checkable
class TokenCompleter(Protocol):
    """Tokens in, sampled tokens (+ logprobs) out. `max_tokens=None` means the completer's default."""

    async def __call__(
        self, model_input: ModelInput, stop: StopCondition, *, max_tokens: int | None = None
    ) -> TokensWithLogprobs: ...


@runtime_checkable
class MessageCompleter(Protocol):
    """Messages in, one message out (e.g. a frozen opponent or grader model)."""

    async def __call__(self, messages: list[Message]) -> Message: ...
