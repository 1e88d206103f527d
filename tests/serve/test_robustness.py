"""The server under concurrency and abuse: eight SDK clients training at once get the losses
each gets alone; a client that disconnects mid-request, and a bounded fuzz of request bodies,
leave it serving."""

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from tinker import types

from tests.serve.conftest import sdk_datums

CLIENTS = 8
KEYS = ("model_id", "path", "seq_id", "prompt", "session_id", "model_seq_id", "sampling_session_id")
KEYS += ("adam_params", "tinker_path", "num_samples", "sampling_params", "lora_config")


def train(service_client, model, seed, steps=1):
    tc = service_client.create_lora_training_client(base_model=model, rank=8, seed=seed).result()
    data, _ = sdk_datums(6, seed=100 + seed)
    losses = []
    for _ in range(steps):
        fb = tc.forward_backward(data, "cross_entropy")
        op = tc.optim_step(types.AdamParams(learning_rate=1e-2))
        losses.append(fb.result().metrics["loss:sum"])
        op.result()
    losses.append(tc.forward(data, "cross_entropy").result().metrics["loss:sum"])
    return losses


def test_eight_concurrent_clients_match_their_solo_runs(server, service_client):
    model = server.cfg.base.model
    alone = [train(service_client, model, seed) for seed in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        together = list(pool.map(lambda seed: train(service_client, model, seed), range(CLIENTS)))
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)
    assert len({round(x[-1], 3) for x in alone}) == CLIENTS  # eight different runs, not one


def test_a_client_disconnecting_mid_request_leaves_the_server_serving(server, service_client):
    host, port = "127.0.0.1", server.port
    # A body cut short: the headers promise 100 kB, 10 bytes arrive, the client hangs up.
    with socket.create_connection((host, port)) as s:
        s.sendall(
            b"POST /api/v1/forward_backward HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100000\r\n\r\n0123456789"
        )
    # A long poll abandoned after 0.2 s, while its request is still running.
    tc = service_client.create_lora_training_client(base_model=server.cfg.base.model, rank=8).result()
    data, _ = sdk_datums(6, seed=7)
    future = tc.forward_backward(data, "cross_entropy")
    rid = httpx.post(
        f"{server.url}/api/v1/create_model", json={"session_id": "x", "model_seq_id": "bad"}
    ).json()
    try:
        httpx.post(
            f"{server.url}/api/v1/retrieve_future", json={"request_id": rid["request_id"]}, timeout=0.2
        )
    except httpx.TimeoutException:
        pass
    assert np.isfinite(future.result().metrics["loss:sum"])
    assert httpx.get(f"{server.url}/api/v1/healthz").json() == {"status": "ok"}


def test_fuzzed_bodies_are_refused_and_the_server_keeps_answering(server):
    rng = np.random.default_rng(0)
    valid = _valid_forward_backward_body(server)
    endpoints = ["create_model", "optim_step", "asample", "save_weights", "load_weights", "get_info",
                 "create_sampling_session", "save_weights_for_sampler", "weights_info"]  # fmt: skip
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(60):
            kind = i % 3
            if kind == 0:  # random bytes, or a valid protobuf cut or flipped at random
                body = bytearray(valid[: int(rng.integers(0, len(valid)))])
                if body and rng.random() < 0.5:
                    body[int(rng.integers(len(body)))] ^= 0xFF
                r = http.post("/api/v1/forward_backward", content=bytes(body) or rng.bytes(20))
            elif kind == 1:  # JSON of the wrong shapes
                junk = [None, 1, "x", [], {}, {"a": [1, {"b": None}]}, -(2**70), 1e308]
                body = {k: junk[int(rng.integers(len(junk)))] for k in KEYS}
                r = http.post(f"/api/v1/{endpoints[i % len(endpoints)]}", content=json.dumps(body))
            else:  # not JSON at all
                r = http.post(
                    f"/api/v1/{endpoints[i % len(endpoints)]}", content=rng.bytes(int(rng.integers(1, 200)))
                )
            assert r.status_code in (200, 400, 404), (i, r.status_code, r.text)
            if r.status_code == 200 and "request_id" in r.json():
                result = http.post(
                    "/api/v1/retrieve_future", json={"request_id": r.json()["request_id"]}
                ).json()
                assert result.get("category") == "user", (i, result)
            elif r.status_code != 200:
                assert r.json()["category"] == "user"
        assert http.get("/api/v1/healthz").json() == {"status": "ok"}
    # A body that claims to be a terabyte is refused from its header alone.
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"POST /api/v1/create_model HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n{}")
        reply = b""
        while b"}" not in reply:  # the JSON error body may come in a second segment
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 400") and "over the limit" in reply
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/api/v1/healthz").json() == {"status": "ok"}


def _valid_forward_backward_body(server) -> bytes:
    from jaxcook.serve import proto

    msg = proto.ForwardBackwardRequest(model_id="nobody:train:0", seq_id=1, loss_fn="cross_entropy")
    d = msg.data.add()
    d.model_input.add().encoded_text.tokens = np.arange(8, dtype="<i4").tobytes()
    for key, arr, dtype in (("target_tokens", np.arange(1, 9, dtype="<i8"), proto.DTYPE_INT64),
                            ("weights", np.ones(8, "<f4"), proto.DTYPE_FLOAT32)):  # fmt: skip
        d.loss_fn_inputs[key].dtype = dtype
        d.loss_fn_inputs[key].dense = arr.tobytes()
        d.loss_fn_inputs[key].shape.append(8)
    return msg.SerializeToString()
