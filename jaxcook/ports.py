"""The contracts between the layers (DESIGN: recipes -> workflows -> ports -> local engine).

Workflows are written against these protocols; `jaxcook.engine.LocalTrainingClient` and
`jaxcook.sampling.LocalSamplingClient` implement them on local devices, and another backend
(the Tinker API through its SDK) can implement them too. Calls that do device work return
`concurrent.futures.Future`s and run in submission order.

Policies for RL are completers: a `TokenCompleter` (tokens in, sampled tokens + log-probs out)
and a `MessageCompleter` (messages in, a message out). The local ones batch many concurrent
calls into one sampler call, so callers issue their calls concurrently (`asyncio.gather` over a
group or a batch), never one after another.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams

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


@runtime_checkable
class TrainingClient(Protocol):
    """Tinker's training calls: gradients accumulate over `forward_backward` calls until
    `optim_step`; every call returns a future and runs in submission order."""

    def forward_backward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future: ...

    def forward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future: ...

    def forward_backward_custom(self, data: list[Datum], fn) -> Future: ...

    def optim_step(self, adam: AdamParams) -> Future: ...

    def save_state(self, path, *, with_optimizer: bool = True) -> Future: ...

    def load_state(self, path, *, weights_only: bool = False) -> Future: ...

    def get_tokenizer(self): ...


@runtime_checkable
class SamplingClient(Protocol):
    """Tinker's sampling calls on one weight snapshot."""

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
    ) -> Future: ...

    def compute_logprobs(self, prompt: ModelInput) -> Future: ...

    def get_tokenizer(self): ...


@runtime_checkable
class SupervisedDataset(Protocol):
    """Deterministic batches: the same (epoch, i) always gives the same list of datums."""

    def get_batch(self, i: int) -> list[Datum]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...
