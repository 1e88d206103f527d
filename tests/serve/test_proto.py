"""Our `.proto` schema and the wire codecs: parsed into working messages, bodies decoded into
datums (dense and sparse tensors), results encoded with the byte offsets the SDK reads."""

import numpy as np
import pytest

from jaxcook.serve import proto, wire
from jaxcook.serve.errors import UserError


def test_schema_has_the_reference_field_numbers():
    fields = lambda name: {f.name: f.number for f in proto.MESSAGES[name].DESCRIPTOR.fields}
    # Field numbers from shared/reference/tinker-api.md section 1.7.
    assert fields("ForwardBackwardRequest") == {
        "model_id": 1, "seq_id": 2, "data": 3, "loss_fn": 4, "loss_fn_config": 5, "forward_only": 6,
        "loss_fn_config_v2": 7,
    }  # fmt: skip
    assert fields("Tensor") == {"dense": 1, "sparse_csr": 2, "dtype": 3, "shape": 4}
    assert fields("BatchedTensor") == {"data": 1, "offsets": 2, "dtype": 3, "trailing_shape": 4}
    assert fields("SampleResponse") == {
        "sequences": 1, "prompt_logprobs": 2, "topk_prompt_logprobs": 3, "prompt_cache_hit_tokens": 4,
        "target_prompt_logprobs": 5, "prompt_alt_tokens": 6,
    }  # fmt: skip
    seq = proto.MESSAGES["SampledSequence"].DESCRIPTOR.fields_by_name
    assert seq["logprobs"].has_presence and not seq["tokens"].has_presence  # proto3 `optional`
    assert proto.ENUM_VALUES["DTYPE_INT64"] == 2 and proto.ENUM_VALUES["STOP_REASON_LENGTH"] == 1


def test_parse_errors_name_the_problem():
    with pytest.raises(proto.ProtoSyntaxError, match="only proto3"):
        proto.parse('syntax = "proto2";')
    with pytest.raises(proto.ProtoSyntaxError, match="expected '='"):
        proto.parse("message A { int32 x 1; }")


def _request(tokens, inputs, **kw):
    msg = proto.ForwardBackwardRequest(model_id="s:train:0", seq_id=3, loss_fn="cross_entropy", **kw)
    d = msg.data.add()
    d.model_input.add().encoded_text.tokens = np.asarray(tokens, "<i4").tobytes()
    for key, t in inputs.items():
        d.loss_fn_inputs[key].CopyFrom(t)
    return msg


def _dense(arr, dtype):
    t = proto.Tensor(dtype=dtype, dense=np.asarray(arr).tobytes())
    t.shape.extend(np.shape(arr))
    return t


def test_decode_dense_and_sparse_inputs():
    sparse = proto.Tensor(dtype=proto.DTYPE_FLOAT32)
    sparse.shape.extend([3, 4])
    # [[0, 2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 5]] in CSR: row pointers 0, 1, 1, 3
    sparse.sparse_csr.values = np.asarray([2, 1, 5], "<f4").tobytes()
    sparse.sparse_csr.crow_indices = np.asarray([0, 1, 1, 3], "<i8").tobytes()
    sparse.sparse_csr.col_indices = np.asarray([1, 0, 3], "<i8").tobytes()
    msg = _request(
        [7, 8, 9],
        {"target_tokens": _dense(np.asarray([8, 9, 10], np.int64), proto.DTYPE_INT64), "weights": sparse},
    )
    msg.loss_fn_config_v2["beta"].number = 0.5
    call = wire.decode_forward_backward(msg.SerializeToString())
    assert (call.model_id, call.seq_id, call.loss_fn, call.loss_fn_config) == (
        "s:train:0",
        3,
        "cross_entropy",
        {"beta": 0.5},
    )
    (datum,) = call.data
    assert datum.model_input.to_ints() == [7, 8, 9]
    assert datum.loss_fn_inputs["target_tokens"].tolist() == [8, 9, 10]
    np.testing.assert_array_equal(datum.loss_fn_inputs["weights"], [[0, 2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 5]])


def test_decode_errors_name_the_field():
    bad = _request([1, 2], {"weights": _dense(np.ones(3, np.float32), proto.DTYPE_FLOAT32)})
    with pytest.raises(UserError, match=r"data\[0\].*weights"):
        wire.decode_forward_backward(bad.SerializeToString())
    ragged = _request([1, 2], {})
    ragged.data[0].model_input[0].encoded_text.tokens = b"\x01\x02\x03"
    with pytest.raises(UserError, match=r"data\[0\].model_input\[0\]: 3 bytes"):
        wire.decode_forward_backward(ragged.SerializeToString())
    with pytest.raises(UserError, match="not a ForwardBackwardRequest"):
        wire.decode_forward_backward(b"\xff\xff\xff")


def test_encode_output_offsets_slice_back_to_datums():
    outs = [{"logprobs": np.asarray([-1.0, -2.0], np.float32)}, {"logprobs": np.asarray([-3.0], np.float32)}]
    msg = proto.ForwardBackwardOutput.FromString(wire.encode_forward_backward_output(outs, {"loss:sum": 6.0}))
    (record,) = msg.loss_fn_outputs
    bt = record.fields["logprobs"]
    offsets = np.frombuffer(bt.offsets, "<i8")  # byte offsets, num_datums + 1 of them
    data = np.frombuffer(bt.data, "<f4")
    assert record.num_datums == 2 and offsets.tolist() == [0, 8, 12]
    assert [data[a // 4 : b // 4].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == [[-1, -2], [-3]]
    assert dict(msg.metrics) == {"loss:sum": 6.0}
