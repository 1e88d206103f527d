"""The contracts between the layers (DESIGN: recipes -> workflows -> ports -> backends).

Workflows, recipes and the domain libraries are written against these protocols and nothing
else: a `ServiceClient` (chosen by name in `jaxcook.backends`) makes `TrainingClient`s, which
make `SamplingClient`s of their weights. `jaxcook.backends.local` implements them on local
devices; another backend (the Tinker API through its SDK) can implement them too. The names and
arguments are Tinker's. Calls that do device work return `concurrent.futures.Future`s and run
in submission order.

Policies for RL are completers: a `TokenCompleter` (tokens in, sampled tokens + log-probs out)
and a `MessageCompleter` (messages in, a message out). Those of `jaxcook.completers` (on any
`SamplingClient`) batch many concurrent calls into one `sample_many`, so callers issue their
calls concurrently (`asyncio.gather` over a group or a batch), never one after another.
"""

from __future__ import annotations

from collections.abc import Sequence
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


@dataclass(frozen=True)
class SavedPath:
    """Where `save_state` / `save_weights_for_sampler` put a state: a local path or a backend
    id (`tinker://...`); `load_state` and `create_sampling_client` take it back."""

    path: str


@dataclass(frozen=True)
class ModelInfo:
    """What `TrainingClient.get_info()` tells about the model being trained."""

    model_name: str
    is_lora: bool
    lora_rank: int | None
    context_window: int  # tokens a prompt + completion may span


@runtime_checkable
class SamplingClient(Protocol):
    """Tinker's sampling calls on one weight snapshot (later training does not change it).

    `sample_many` / `compute_logprobs_many` are many `sample` / `compute_logprobs` calls in one
    (a backend may run them as one batch; the results are the same as one call per prompt).
    `prompt_logprobs_last_n` (Tinker's name) asks only for the last n positions of a prompt
    (the others are None): a backend may then skip the rest.
    """

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
    ) -> Future: ...

    def sample_many(
        self,
        prompts: Sequence[ModelInput],
        num_samples: int | Sequence[int],
        sampling_params: SamplingParams | Sequence[SamplingParams],
        include_prompt_logprobs: bool = False,
    ) -> Future: ...

    def compute_logprobs(self, prompt: ModelInput) -> Future: ...

    def compute_logprobs_many(
        self, prompts: Sequence[ModelInput], *, prompt_logprobs_last_n: Sequence[int | None] | None = None
    ) -> Future: ...

    def get_tokenizer(self): ...

    def close(self) -> None: ...


@runtime_checkable
class TrainingClient(Protocol):
    """Tinker's training calls: gradients accumulate over `forward_backward` calls until
    `optim_step`; every call returns a future and runs in submission order.

    A list of datums of any length may go to one call: a backend splits it as its devices need
    (gradients accumulate, so that changes nothing). `save_state(name)` saves weights +
    optimizer (`with_optimizer=False`: weights only) and resolves to a `SavedPath`; the local
    backend takes `name` as a path, a service that stores states itself as a name.
    `load_state(path)` restores weights + optimizer, `load_state(path, weights_only=True)`
    weights only; `load_state_with_optimizer(path)` is Tinker's name of the former. Both resolve
    to the `user_metadata` the state was saved with.

    Sampling: `save_weights_and_get_sampling_client()` is a `SamplingClient` of the weights after
    every call submitted so far (before training: the reference policy of DPO and KL penalties).
    `forward_topk(data, k)`: per datum, the `k` most likely next tokens at each input position
    and their log-probs (`(ids_TK, logp_TK)`, for top-K distillation).
    """

    def forward_backward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future: ...

    def forward(
        self, data: list[Datum], loss_fn: str = "cross_entropy", loss_fn_config: dict | None = None
    ) -> Future: ...

    def forward_backward_custom(self, data: list[Datum], fn) -> Future: ...

    def forward_topk(self, data: list[Datum], k: int) -> Future: ...

    def optim_step(self, adam: AdamParams) -> Future: ...

    def save_state(
        self, name: str, *, with_optimizer: bool = True, user_metadata: dict | None = None
    ) -> Future: ...

    def load_state(self, path: str, *, weights_only: bool = False) -> Future: ...

    def load_state_with_optimizer(self, path: str) -> Future: ...

    def save_weights_for_sampler(self, name: str, *, user_metadata: dict | None = None) -> Future: ...

    def save_weights_and_get_sampling_client(self, name: str | None = None) -> SamplingClient: ...

    def get_info(self) -> ModelInfo: ...

    def get_tokenizer(self): ...

    def close(self) -> None: ...


@runtime_checkable
class ServiceClient(Protocol):
    """Tinker's `ServiceClient`: makes training clients (and sampling clients of saved weights).

    Shape hints a backend needs (bucket sizes, devices, dtype, seed) are its own options, given
    when it is created (`jaxcook.backends.make_service`), never calls a workflow makes.
    """

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        *,
        seed: int = 0,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        alpha: float | None = None,
    ) -> TrainingClient: ...

    def create_full_training_client(self, base_model: str) -> TrainingClient: ...

    def create_training_client_from_state(self, path: str) -> TrainingClient: ...

    def create_training_client_from_state_with_optimizer(self, path: str) -> TrainingClient: ...

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None
    ) -> SamplingClient: ...

    def get_tokenizer(self, base_model: str): ...


@runtime_checkable
class SupervisedDataset(Protocol):
    """Deterministic batches: the same (epoch, i) always gives the same list of datums."""

    def get_batch(self, i: int) -> list[Datum]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


def per_prompt(
    prompts: Sequence[ModelInput],
    num_samples: int | Sequence[int],
    sampling_params: SamplingParams | Sequence[SamplingParams],
) -> tuple[list[int], list[SamplingParams]]:
    """`sample_many`'s `num_samples` and `sampling_params`, one per prompt (given once for all
    prompts or one per prompt); a mismatch is a one-line error."""
    if not prompts:
        raise ValueError("sample_many: no prompts")
    counts = [num_samples] * len(prompts) if isinstance(num_samples, int) else list(num_samples)
    params = (
        [sampling_params] * len(prompts)
        if isinstance(sampling_params, SamplingParams)
        else list(sampling_params)
    )
    if not len(counts) == len(params) == len(prompts):
        raise ValueError(
            f"sample_many: {len(prompts)} prompts, {len(counts)} num_samples, {len(params)} sampling_params"
        )
    return counts, params
