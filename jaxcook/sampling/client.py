"""The local `SamplingClient`: Tinker's `sample` / `compute_logprobs` on a frozen weight snapshot.

    sc = tc.save_weights_and_get_sampling_client()               # the port's way: current weights
    sc = LocalSamplingClient.from_training_client(tc)            # the same, without the port
    ref = LocalSamplingClient.from_training_client(tc, adapters=False)   # the base model
    sc = LocalSamplingClient.from_checkpoint(path, "smollm2-135m-instruct", lora=LoraConfig())
    sc = LocalSamplingClient.from_model(model, tokenizer)
    resp = sc.sample(prompt, num_samples=4, sampling_params=SamplingParams(max_tokens=64)).result()

Every call validates its input at once (errors are raised to the caller), then runs on one worker
thread and returns a `concurrent.futures.Future`. A client holds its own copy of the weights (a
snapshot): later training steps do not change what it samples.

Defaults: `max_tokens=None` means `default_max_tokens`; a request never generates past the
context window (`max_tokens` is capped at `context_window - prompt length`, and the sequence
then ends with stop reason "length"); a prompt that leaves no room to generate is an error.
`seed=None` draws a fresh seed from the client's generator (`seed=` at construction makes a
run reproducible). `SampledSequence.logprobs` are the model's log-probabilities at temperature
1 (what the trainer computes), not those of the tempered distribution (Tinker's behaviour).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from jaxcook.engine.distributed import to_host
from jaxcook.ports import per_prompt
from jaxcook.sampling import weights as weights_lib
from jaxcook.sampling.decode import decode
from jaxcook.sampling.plan import Request, SamplerBuckets, build, unpack
from jaxcook.sampling.stops import eos_ids, resolve_stop
from jaxcook.types import ModelInput, SampleResponse, SamplingParams

# Per training client: its frozen base, unstacked once and shared by all its snapshots.
_FROZEN_PARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _then(future: Future, fn: Callable) -> Future:
    out: Future = Future()

    def done(f: Future):
        try:
            out.set_result(fn(f.result()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            out.set_exception(e)

    future.add_done_callback(done)
    return out


class LocalSamplingClient:
    """Sample from one weight snapshot of a decoder on this process's devices."""

    def __init__(
        self,
        graph: weights_lib.SamplerGraph,
        weights: weights_lib.SamplerWeights,
        *,
        tokenizer=None,
        buckets: SamplerBuckets = SamplerBuckets(),
        default_max_tokens: int = 512,
        context_window: int | None = None,
        seed: int | None = None,
        scorer: Callable | None = None,
    ):
        # scorer(prompts, last_n) -> prompt log-probs: the trainer's forward on these weights
        # (set by `LocalTrainingClient.save_weights_and_get_sampling_client`); None = the prefill.
        self.scorer = scorer
        self.graph, self.weights, self.tokenizer, self.buckets = graph, weights, tokenizer, buckets
        self.config = graph.config
        self.default_max_tokens = default_max_tokens
        self.context_window = context_window or self.config.max_position_embeddings
        self.eos = eos_ids(tokenizer, self.config)
        self.decode_calls = 0  # sampler invocations (one jitted decode each)
        self._rng = np.random.default_rng(seed)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-sample")
        self._lock = threading.Lock()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_states(cls, graphdef, *states, **kwargs) -> LocalSamplingClient:
        """From a graphdef and the states that complete it (e.g. trainable + frozen)."""
        graph = weights_lib.graph_of(graphdef, *states)
        L = graph.config.stacked_layers
        weights = weights_lib.merge_parts(*(weights_lib.part_of(s, L) for s in states))
        return cls(graph, weights, **kwargs)

    @classmethod
    def from_model(cls, model, tokenizer=None, *, adapters: bool = True, **kwargs) -> LocalSamplingClient:
        """From a `Decoder` (its weights are copied; `adapters=False` zeroes LoRA adapters)."""
        from flax import nnx

        graphdef, state = nnx.split(model)
        if not adapters:
            state = weights_lib.zero_adapters(state)
        return cls.from_states(graphdef, state, tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_training_client(
        cls, tc, *, adapters: bool = True, keep_params: bool = False, **kwargs
    ) -> LocalSamplingClient:
        """A snapshot of `tc`'s weights after every call submitted to it so far.

        `adapters=False` is the base model (every LoRA `lora_b` zeroed): the reference policy of
        KL penalties and DPO, sharing the frozen base with every other snapshot.
        """
        if not adapters and tc.lora is None:
            raise ValueError(
                "adapters=False needs a LoRA training client (full fine-tuning has no base to keep)"
            )
        params = tc.snapshot_params().result()
        if not adapters:
            params = weights_lib.zero_adapters(params)
        cached = _FROZEN_PARTS.get(tc)
        if cached is None or cached[0] is not tc.frozen:
            graph = weights_lib.graph_of(tc.graphdef, params, tc.frozen)
            cached = (tc.frozen, graph, weights_lib.part_of(tc.frozen, graph.config.stacked_layers))
            _FROZEN_PARTS[tc] = cached
        _, graph, frozen_part = cached
        weights = weights_lib.merge_parts(
            frozen_part, weights_lib.part_of(params, graph.config.stacked_layers)
        )
        kwargs.setdefault("tokenizer", tc.tokenizer)
        sc = cls(graph, weights, **kwargs)
        # `keep_params`: the trainable params also as trained (stacked, a second copy), for a scorer
        sc.snapshot_params = params if keep_params else None
        return sc

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, model_name: str, lora=None, *, adapters: bool = True, **kwargs
    ) -> LocalSamplingClient:
        """The trainable params saved at `path` (`save_state`) on top of `model_name`'s base
        (`lora` must be the training run's LoRA config; None for full fine-tuning)."""
        from jaxcook import lora as lora_lib
        from jaxcook.engine import checkpoint
        from jaxcook.engine.train_step import init_train_state
        from jaxcook.models import load

        loaded = load(model_name, lora=lora)
        graphdef, trainable, frozen = lora_lib.split(loaded.model, lora)
        state, _ = checkpoint.restore(path, init_train_state(trainable))
        params = state.params if adapters else weights_lib.zero_adapters(state.params)
        kwargs.setdefault("tokenizer", loaded.tokenizer)
        return cls.from_states(graphdef, params, frozen, **kwargs)

    def get_tokenizer(self):
        return self.tokenizer

    # -- requests -------------------------------------------------------------------------------

    def _request(
        self,
        prompt: ModelInput,
        num_samples: int,
        params: SamplingParams,
        prompt_logprobs: bool,
        *,
        scoring=False,
    ) -> Request:
        tokens = tuple(prompt.to_ints())
        n, C = len(tokens), self.context_window
        if n == 0:
            raise ValueError("sample: the prompt is empty")
        if n > C or (n == C and not scoring):
            raise ValueError(
                f"sample: the prompt has {n} tokens; the model's context window is {C} tokens "
                "(a prompt must leave room for at least one generated token)"
            )
        if min(tokens) < 0 or max(tokens) >= self.config.vocab_size:
            raise ValueError(f"sample: prompt token ids must be in [0, {self.config.vocab_size})")
        if num_samples < 1:
            raise ValueError(f"sample: num_samples must be >= 1, got {num_samples}")
        max_tokens = self.default_max_tokens if params.max_tokens is None else params.max_tokens
        if max_tokens < 1:
            raise ValueError(f"SamplingParams.max_tokens must be >= 1, got {max_tokens}")
        if params.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {params.temperature}")
        if not 0.0 < params.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {params.top_p}")
        encode = None
        if self.tokenizer is not None:
            encode = lambda s: self.tokenizer.encode(s, add_special_tokens=False)
        stop = resolve_stop(params.stop, eos=self.eos, vocab_size=self.config.vocab_size, encode=encode)
        with self._lock:
            seed = int(self._rng.integers(2**32)) if params.seed is None else int(params.seed)
        return Request(
            tokens=tokens,
            num_samples=num_samples,
            max_tokens=max(1, min(max_tokens, C - n)),
            seed=seed,
            temperature=float(params.temperature),
            top_k=int(params.top_k),
            top_p=float(params.top_p),
            stop=stop,
            prompt_logprobs=prompt_logprobs,
        )

    def _run(self, requests: list[Request]) -> list[SampleResponse]:
        spec, inputs = build(requests, self.buckets)
        out = to_host(decode(self.graph, spec, self.weights, inputs))  # multi-host: gathered
        decode_text = None
        if self.tokenizer is not None:
            decode_text = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False)
        return unpack(requests, out, decode_text)

    def _submit(self, requests: list[Request]) -> Future:
        with self._lock:
            self.decode_calls += 1
            return self._executor.submit(self._run, requests)

    # -- the SamplingClient port -----------------------------------------------------------------

    def sample_many(
        self,
        prompts: Sequence[ModelInput],
        num_samples: int | Sequence[int],
        sampling_params: SamplingParams | Sequence[SamplingParams],
        include_prompt_logprobs: bool = False,
    ) -> Future:
        """One sampler call for many prompts: Future[list[SampleResponse]] in prompt order.
        `num_samples` and `sampling_params` are one for all prompts or one per prompt."""
        counts, params = per_prompt(prompts, num_samples, sampling_params)
        requests = [
            self._request(p, n, sp, include_prompt_logprobs) for p, n, sp in zip(prompts, counts, params)
        ]
        return self._submit(requests)

    def sample(
        self,
        prompt: ModelInput,
        num_samples: int,
        sampling_params: SamplingParams,
        include_prompt_logprobs: bool = False,
    ) -> Future:
        """Future[SampleResponse]: `num_samples` completions of `prompt` sharing one prefill."""
        return _then(
            self.sample_many([prompt], num_samples, sampling_params, include_prompt_logprobs), lambda r: r[0]
        )

    def compute_logprobs_many(
        self, prompts: Sequence[ModelInput], *, prompt_logprobs_last_n: Sequence[int | None] | None = None
    ) -> Future:
        """Future[list[list[float | None]]]: each prompt's token log-probabilities (entry 0 None).
        `prompt_logprobs_last_n[i]`: only the last n entries of prompt i are wanted (the others
        are None; a client with a `scorer` then unembeds only those positions)."""
        params = SamplingParams(max_tokens=1, stop=[], temperature=0.0)
        requests = [self._request(p, 1, params, True, scoring=True) for p in prompts]
        if not requests:
            raise ValueError("compute_logprobs_many: no prompts")
        last_n = (
            list(prompt_logprobs_last_n) if prompt_logprobs_last_n is not None else [None] * len(requests)
        )
        if len(last_n) != len(requests):
            raise ValueError(
                f"compute_logprobs_many: {len(requests)} prompts, {len(last_n)} prompt_logprobs_last_n"
            )
        if self.scorer is not None:
            tokens = [r.tokens for r in requests]
            with self._lock:
                return self._executor.submit(self.scorer, tokens, last_n)

        def keep_last(rows):
            return [
                lp if n is None else [None] * max(0, len(lp) - n) + lp[max(0, len(lp) - n) :]
                for lp, n in zip(rows, last_n)
            ]

        return _then(self._submit(requests), lambda rs: keep_last([r.prompt_logprobs for r in rs]))

    def compute_logprobs(self, prompt: ModelInput) -> Future:
        """Future[list[float | None]]: log p(token i | tokens < i) of the prompt, entry 0 None."""
        return _then(self.compute_logprobs_many([prompt]), lambda r: r[0])

    def close(self) -> None:
        self._executor.shutdown(wait=True)
