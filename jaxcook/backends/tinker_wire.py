"""jaxcook's data types <-> the public `tinker` SDK's (`tinker.types`), for the Tinker backend.

The two contracts are the same (DESIGN: "Data contract (same as Tinker)"), so each conversion
is a copy: token ids int64 and every other loss input float32 on the way out, float32 arrays and
plain lists on the way back.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tinker import types as sdk

from jaxcook.types import (
    AdamParams,
    Datum,
    ForwardBackwardOutput,
    ModelInput,
    SampledSequence,
    SampleResponse,
    SamplingParams,
)

INT_INPUTS = frozenset({"target_tokens"})  # Tinker's integer loss inputs; the rest are float32


def model_input(value: ModelInput) -> sdk.ModelInput:
    return sdk.ModelInput.from_ints(value.to_ints())


def datum(d: Datum, keys=None) -> sdk.Datum:
    """`d` as an SDK datum; `keys`: only these loss inputs (None: all of them)."""
    inputs = {
        k: np.ascontiguousarray(v, np.int64 if k in INT_INPUTS else np.float32)
        for k, v in d.loss_fn_inputs.items()
        if keys is None or k in keys
    }
    return sdk.Datum(model_input=model_input(d.model_input), loss_fn_inputs=inputs)


def forward_backward_output(out: sdk.ForwardBackwardOutput) -> ForwardBackwardOutput:
    per_datum = [
        {k: np.asarray(v.to_numpy(), np.float32) for k, v in record.items()} for record in out.loss_fn_outputs
    ]
    return ForwardBackwardOutput(per_datum, {k: float(v) for k, v in out.metrics.items()})


def adam_params(adam: AdamParams) -> sdk.AdamParams:
    return sdk.AdamParams(**dataclasses.asdict(adam))


def sampling_params(params: SamplingParams) -> sdk.SamplingParams:
    stop = params.stop if params.stop is None or isinstance(params.stop, str) else list(params.stop)
    return sdk.SamplingParams(
        max_tokens=params.max_tokens,
        seed=params.seed,
        stop=stop,
        temperature=params.temperature,
        top_k=params.top_k,
        top_p=params.top_p,
    )


def sample_response(resp: sdk.SampleResponse) -> SampleResponse:
    sequences = [
        SampledSequence(
            list(s.tokens), list(s.logprobs or []), "length" if s.stop_reason == "length" else "stop"
        )
        for s in resp.sequences
    ]
    prompt = resp.prompt_logprobs
    return SampleResponse(sequences, None if prompt is None else [none_if_nan(x) for x in prompt])


def none_if_nan(x):
    return None if x is None or x != x else float(x)
