"""Wire conversions: Tinker request bodies (protobuf and JSON) to jaxcook types, results back.

Every decoding error is a `UserError` that names the field at fault (`data[3].loss_fn_inputs
['weights']`, `sampling_params.max_tokens`), so a bad request becomes a Tinker error result
(category "user") instead of a crash.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from jaxcook.serve import proto
from jaxcook.serve.errors import UserError
from jaxcook.types import Datum, ModelInput, SampleResponse, SamplingParams

_NUMPY = {proto.DTYPE_FLOAT32: np.float32, proto.DTYPE_INT64: np.int64, proto.DTYPE_INT32: np.int32}


@dataclass(frozen=True)
class ForwardBackwardCall:
    model_id: str
    seq_id: int
    data: list[Datum]
    loss_fn: str
    loss_fn_config: dict[str, Any]
    forward_only: bool


def _frombuffer(raw: bytes, dtype, where: str) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise UserError(f"{where}: {len(raw)} bytes is not a whole number of {np.dtype(dtype).name} values")
    return np.frombuffer(raw, dtype=dtype)


def tensor_to_numpy(msg, where: str) -> np.ndarray:
    """A proto `Tensor` (dense, or sparse CSR for 2-D) as a dense numpy array."""
    dtype = _NUMPY.get(msg.dtype)
    if dtype is None:
        raise UserError(f"{where}: unsupported dtype {msg.dtype} (float32, int64 or int32)")
    shape = [int(s) for s in msg.shape]
    if msg.HasField("sparse_csr"):
        if len(shape) != 2:
            raise UserError(f"{where}: a sparse CSR tensor needs a 2-D shape, got {shape}")
        csr = msg.sparse_csr
        values = _frombuffer(csr.values, dtype, where + ".values")
        crow = _frombuffer(csr.crow_indices, np.int64, where + ".crow_indices")
        cols = _frombuffer(csr.col_indices, np.int64, where + ".col_indices")
        rows, width = shape
        if len(crow) != rows + 1 or len(cols) != len(values) or (len(cols) and cols.max() >= width):
            raise UserError(f"{where}: inconsistent sparse CSR indices for shape {shape}")
        dense = np.zeros(shape, dtype)
        row_of = np.repeat(np.arange(rows), np.diff(crow))
        if len(row_of) != len(values):
            raise UserError(f"{where}: crow_indices do not match {len(values)} values")
        dense[row_of, cols] = values
        return dense
    arr = _frombuffer(msg.dense, dtype, where)
    if shape:
        if math.prod(shape) != arr.size:
            raise UserError(f"{where}: {arr.size} values do not fill shape {shape}")
        arr = arr.reshape(shape)
    return arr


def _datum(msg, i: int) -> Datum:
    tokens = []
    for j, chunk in enumerate(msg.model_input):
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise UserError(f"data[{i}].model_input[{j}]: {kind} chunks are not supported (text only)")
        tokens.append(_frombuffer(chunk.encoded_text.tokens, np.int32, f"data[{i}].model_input[{j}]"))
    inputs = {
        key: tensor_to_numpy(t, f"data[{i}].loss_fn_inputs[{key!r}]") for key, t in msg.loss_fn_inputs.items()
    }
    try:
        return Datum(ModelInput.from_ints(np.concatenate(tokens).tolist() if tokens else []), inputs)
    except (TypeError, ValueError) as e:
        raise UserError(f"data[{i}]: {e}") from e


def decode_forward_backward(body: bytes) -> ForwardBackwardCall:
    try:
        msg = proto.ForwardBackwardRequest.FromString(body)
    except DecodeError as e:
        raise UserError(f"forward_backward: the body is not a ForwardBackwardRequest protobuf ({e})") from e
    if not msg.model_id:
        raise UserError("forward_backward: model_id is missing")
    config: dict[str, Any] = {}
    if msg.loss_fn_config_v2:
        for key, value in msg.loss_fn_config_v2.items():
            config[key] = value.number if value.WhichOneof("value") == "number" else value.text
    else:
        config = dict(msg.loss_fn_config)
    return ForwardBackwardCall(
        model_id=msg.model_id,
        seq_id=int(msg.seq_id),
        data=[_datum(d, i) for i, d in enumerate(msg.data)],
        loss_fn=msg.loss_fn or "cross_entropy",
        loss_fn_config=config,
        forward_only=bool(msg.forward_only),
    )


def encode_forward_backward_output(loss_fn_outputs: list[dict[str, np.ndarray]], metrics: dict) -> bytes:
    """One `ArrayRecord` whose fields are the per-datum arrays, concatenated with byte offsets."""
    out = proto.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    for key, value in metrics.items():
        out.metrics[key] = float(value)
    record = out.loss_fn_outputs.add(type_tag="ArrayRecord", num_datums=len(loss_fn_outputs))
    for name in loss_fn_outputs[0] if loss_fn_outputs else ():
        arrays = [np.ascontiguousarray(d[name], np.float32) for d in loss_fn_outputs]
        sizes = np.array([0] + [a.nbytes for a in arrays], np.int64)
        field = record.fields[name]
        field.data = b"".join(a.tobytes() for a in arrays)
        field.offsets = np.cumsum(sizes).astype("<i8").tobytes()
        field.dtype = proto.DTYPE_FLOAT32
        field.trailing_shape.extend(arrays[0].shape[1:] if arrays else ())
    return out.SerializeToString()


def encode_sample_response(resp: SampleResponse) -> bytes:
    out = proto.SampleResponse()
    for seq in resp.sequences:
        s = out.sequences.add()
        s.stop_reason = proto.STOP_REASON_STOP if seq.stop_reason == "stop" else proto.STOP_REASON_LENGTH
        s.tokens = np.asarray(seq.tokens, "<i4").tobytes()
        s.logprobs = np.asarray(seq.logprobs, "<f4").tobytes()
    if resp.prompt_logprobs is not None:
        lp = [math.nan if x is None else x for x in resp.prompt_logprobs]
        out.prompt_logprobs = np.asarray(lp, "<f4").tobytes()
    return out.SerializeToString()


# -- JSON bodies --------------------------------------------------------------------------------


def field(body: dict, key: str, kind, *, where: str, default=...):
    """`body[key]` checked to be of `kind` (a type or tuple); missing -> `default` or an error."""
    if key not in body or body[key] is None:
        if default is ...:
            raise UserError(f"{where}: {key} is missing")
        return default
    value = body[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"{where}: {key} must be {names}, got {type(value).__name__}")
    return value


def model_input_from_json(value, where: str) -> ModelInput:
    if not isinstance(value, dict) or not isinstance(value.get("chunks"), list):
        raise UserError(f"{where}: expected {{'chunks': [...]}}")
    tokens: list[int] = []
    for j, chunk in enumerate(value["chunks"]):
        if not isinstance(chunk, dict) or chunk.get("type", "encoded_text") != "encoded_text":
            kind = chunk.get("type") if isinstance(chunk, dict) else type(chunk).__name__
            raise UserError(f"{where}.chunks[{j}]: {kind} chunks are not supported (text only)")
        toks = chunk.get("tokens")
        if not isinstance(toks, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in toks
        ):
            raise UserError(f"{where}.chunks[{j}].tokens must be a list of ints")
        tokens.extend(toks)
    return ModelInput.from_ints(tokens)


def sampling_params_from_json(value, where: str = "sampling_params") -> SamplingParams:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be an object")
    stop = value.get("stop")
    if stop is not None and not isinstance(stop, str | list):
        raise UserError(f"{where}.stop must be a string or a list")
    return SamplingParams(
        max_tokens=field(value, "max_tokens", int, where=where, default=None),
        seed=field(value, "seed", int, where=where, default=None),
        stop=stop,
        temperature=float(field(value, "temperature", (int, float), where=where, default=1.0)),
        top_k=field(value, "top_k", int, where=where, default=-1),
        top_p=float(field(value, "top_p", (int, float), where=where, default=1.0)),
    )
