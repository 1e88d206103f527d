"""Token and message completers on any `SamplingClient` (the port), batching concurrent calls.

RL rollouts call the policy once per env, concurrently (`asyncio.gather` over a group and a
batch). Each call here only queues its request and awaits a future; a flusher task waits one
short window (`batch_window_s`) for the other calls of the same burst, folds identical
requests (same prompt, stop and max_tokens) into one prompt with `num_samples` = their count
(one shared prefill), runs ONE `sample_many` (the client runs it off the event loop) and
resolves each caller's future. With `seed`, the completer seeds each prompt of a batch from its
own generator, in order, so the same calls give the same samples (a resumed RL step resamples
what it sampled before). Calls that arrive while a sampler call runs
are batched into the next one; at most one sampler call per completer is in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxcook.ports import SamplingClient, StopCondition, TokensWithLogprobs
from jaxcook.renderers import Message, Renderer
from jaxcook.types import ModelInput, SamplingParams


@dataclass
class _Pending:
    key: tuple  # (prompt tokens, stop, max_tokens): identical requests share a prompt row group
    prompt: ModelInput
    params: SamplingParams
    future: asyncio.Future


class LocalTokenCompleter:
    """`TokenCompleter`: tokens in, sampled tokens + log-probs out (the model's log-probs at
    temperature 1, as the trainer computes them).

    `context_window` (the model's, from `TrainingClient.get_info()`) caps `max_tokens` so prompt +
    completion fit (None: no cap here; the sampling client caps or refuses); `seed`: see the
    module docstring.
    """

    def __init__(
        self,
        sampling_client: SamplingClient,
        max_tokens: int,
        temperature: float = 1.0,
        *,
        top_k: int = -1,
        top_p: float = 1.0,
        context_window: int | None = None,
        batch_window_s: float = 0.002,
        seed: int | None = None,
    ):
        self.sampling_client, self.max_tokens, self.temperature = sampling_client, max_tokens, temperature
        self.top_k, self.top_p = top_k, top_p
        self.context_window = context_window
        self.batch_window_s = batch_window_s
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task | None = None

    async def __call__(
        self, model_input: ModelInput, stop: StopCondition, *, max_tokens: int | None = None
    ) -> TokensWithLogprobs:
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if self.context_window is not None:
            room = self.context_window - model_input.length
            if room < 1:
                raise ValueError(
                    f"TokenCompleter: the prompt has {model_input.length} tokens, the context window "
                    f"{self.context_window}: no room to generate"
                )
            max_tokens = min(max_tokens, room)
        stop_key = tuple(stop) if isinstance(stop, (list, tuple)) else stop
        params = SamplingParams(
            max_tokens=max_tokens,
            stop=list(stop) if isinstance(stop, (list, tuple)) else stop,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
        )
        loop = asyncio.get_running_loop()
        request = _Pending(
            (tuple(model_input.to_ints()), stop_key, max_tokens), model_input, params, loop.create_future()
        )
        self._pending.append(request)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await request.future

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(self.batch_window_s)  # let the rest of this burst queue up
            batch, self._pending = self._pending, []
            groups: dict[tuple, list[_Pending]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            members = list(groups.values())
            params = [g[0].params for g in members]
            if self._rng is not None:
                params = [dataclasses.replace(p, seed=int(self._rng.integers(2**32))) for p in params]
            try:
                future = self.sampling_client.sample_many(
                    [g[0].prompt for g in members], [len(g) for g in members], params
                )
                responses = await asyncio.wrap_future(future)
            except Exception as e:  # noqa: BLE001 - every caller of this batch sees the error
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(e)
                continue
            for group, response in zip(members, responses, strict=True):
                for request, seq in zip(group, response.sequences, strict=True):
                    if not request.future.done():  # a cancelled caller is skipped
                        request.future.set_result(
                            TokensWithLogprobs(seq.tokens, seq.logprobs, seq.stop_reason)
                        )


class LocalMessageCompleter:
    """`MessageCompleter`: messages in, one assistant message out, rendered and parsed by
    `renderer`. Stops at `stop_condition` or, by default, the renderer's stop sequences.
    Concurrent calls are batched like the token completer's."""

    def __init__(
        self,
        sampling_client: SamplingClient,
        renderer: Renderer,
        max_tokens: int,
        *,
        stop_condition: StopCondition | None = None,
        temperature: float = 1.0,
        **completer_kwargs,
    ):
        self.renderer = renderer
        self.stop_condition = stop_condition if stop_condition is not None else renderer.get_stop_sequences()
        self.tokens = LocalTokenCompleter(sampling_client, max_tokens, temperature, **completer_kwargs)

    async def __call__(self, messages: list[Message]) -> Message:
        prompt = self.renderer.build_generation_prompt(messages)
        out = await self.tokens(prompt, self.stop_condition)
        message, _ = self.renderer.parse_response(out.tokens)
        return message

    async def complete_many(self, conversations: Sequence[list[Message]]) -> list[Message]:
        """One reply per conversation (one sampler call for the lot)."""
        return list(await asyncio.gather(*(self(m) for m in conversations)))
