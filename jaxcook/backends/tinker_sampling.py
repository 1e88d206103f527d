"""The Tinker backend's `SamplingClient`: the port's sampling calls on an SDK `SamplingClient`.

Every call is one SDK request (`sample`, or `compute_logprobs` for prompt scoring); the "many"
calls send them all at once and gather the futures, so the service sees them concurrently.
`prompt_logprobs_last_n` is applied here (earlier entries set to None), not sent: not every
Tinker-API server takes it (`jaxcook serve` does not), and the results are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future

from jaxcook.backends import tinker_wire as wire
from jaxcook.ports import per_prompt
from jaxcook.types import ModelInput, SamplingParams


def gather(futures: list[Future], convert: Callable = lambda results: results) -> Future:
    """A future of `convert([f.result() for f in futures])` (the first error, if any)."""
    out: Future = Future()
    left = [len(futures)]

    def done(_):
        left[0] -= 1
        if left[0] or out.done():
            return
        try:
            out.set_result(convert([f.result() for f in futures]))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            out.set_exception(e)

    if not futures:
        out.set_result(convert([]))
    for f in futures:
        f.add_done_callback(done)
    return out


def then(future: Future, convert: Callable) -> Future:
    return gather([future], lambda results: convert(results[0]))


class TinkerSamplingClient:
    """`jaxcook.ports.SamplingClient` over `sdk_client` (a `tinker.SamplingClient`); `tokenizer`
    is a callable that loads the tokenizer (jaxcook's loading, not the SDK's hub lookup)."""

    def __init__(self, sdk_client, tokenizer: Callable[[], object]):
        self.sdk = sdk_client
        self._tokenizer = tokenizer

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
    ) -> Future:
        future = self.sdk.sample(
            wire.model_input(prompt),
            num_samples,
            wire.sampling_params(sampling_params),
            include_prompt_logprobs=include_prompt_logprobs,
        ).future()
        return then(future, wire.sample_response)

    def sample_many(
        self,
        prompts: Sequence[ModelInput],
        num_samples: int | Sequence[int],
        sampling_params: SamplingParams | Sequence[SamplingParams],
        include_prompt_logprobs: bool = False,
    ) -> Future:
        counts, params = per_prompt(prompts, num_samples, sampling_params)
        return gather(
            [self.sample(p, n, sp, include_prompt_logprobs) for p, n, sp in zip(prompts, counts, params)]
        )

    def compute_logprobs(self, prompt: ModelInput) -> Future:
        """Future[list[float | None]]: log p(token i | tokens < i) of the prompt, entry 0 None."""
        return then(self.sdk.compute_logprobs(wire.model_input(prompt)).future(), _logprobs)

    def compute_logprobs_many(
        self, prompts: Sequence[ModelInput], *, prompt_logprobs_last_n: Sequence[int | None] | None = None
    ) -> Future:
        if not prompts:
            raise ValueError("compute_logprobs_many: no prompts")
        last_n = list(prompt_logprobs_last_n) if prompt_logprobs_last_n is not None else [None] * len(prompts)
        if len(last_n) != len(prompts):
            raise ValueError(f"compute_logprobs_many: {len(prompts)} prompts, {len(last_n)} last_n values")

        def keep_last(rows):
            cuts = [0 if n is None else max(0, len(row) - n) for row, n in zip(rows, last_n, strict=True)]
            return [[None] * cut + row[cut:] for row, cut in zip(rows, cuts, strict=True)]

        return gather([self.compute_logprobs(p) for p in prompts], keep_last)

    def get_tokenizer(self):
        return self._tokenizer()

    def close(self) -> None:
        """Nothing to release here: the SDK's sampler lives as long as its session."""


def _logprobs(row) -> list[float | None]:
    return [wire.none_if_nan(x) for x in row]
