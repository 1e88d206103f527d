"""The HTTP routes of the Tinker API (SDK 0.38) over a `TinkerService`, as a FastAPI app.

JSON everywhere except `forward_backward` (a protobuf body) and the results of forward_backward
and asample (protobuf, from `retrieve_future`). A long call answers `{"request_id"}` at once;
`retrieve_future` holds the poll up to `poll_timeout` seconds, then answers `try_again`. A
failed request's result is `{"error", "category"}` with status 200 (what the SDK raises as
`RequestFailedError`); a synchronous call with bad input answers 400 (404 for an unknown id),
and a malformed body never reaches the engine.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from jaxcook.serve.errors import NotFound, UserError
from jaxcook.serve.service import TinkerService

log = logging.getLogger("jaxcook.serve")
PROTO = "application/x-protobuf"


def _error(status: int, message: str, category: str = "user") -> JSONResponse:
    # x-should-retry: false stops the SDK's HTTP layer from retrying a request that cannot succeed.
    return JSONResponse({"error": message, "category": category}, status, headers={"x-should-retry": "false"})


def create_app(
    service: TinkerService, *, poll_timeout: float = 25.0, max_body_bytes: int = 512 << 20
) -> FastAPI:
    app = FastAPI(title="jaxcook Tinker-compatible server")
    app.state.service = service
    base = service.base
    api = "/api/v1"

    async def body_of(request: Request) -> bytes:
        size = request.headers.get("content-length", "0")
        if not size.isdigit() or int(size) > max_body_bytes:
            raise UserError(
                f"{request.url.path}: a body of {size} bytes is over the limit of {max_body_bytes}"
            )
        return await request.body()

    async def json_of(request: Request) -> dict:
        raw = await body_of(request)
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{request.url.path}: the body is not JSON ({e})") from e
        if not isinstance(body, dict):
            raise UserError(f"{request.url.path}: the body must be a JSON object, got {type(body).__name__}")
        return body

    @app.exception_handler(NotFound)
    async def not_found_id(request: Request, exc: NotFound):
        return _error(404, str(exc))

    @app.exception_handler(UserError)
    async def bad_request(request: Request, exc: UserError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):  # a bug in one request: the server stays up
        log.exception("%s failed", request.url.path, exc_info=exc)
        return _error(500, f"{type(exc).__name__}: {exc}", "server")

    # -- startup, sessions ----------------------------------------------------------------------

    @app.post(api + "/client/config")
    async def client_config(request: Request):
        await json_of(request)
        return {
            "pjwt_auth_enabled": False,
            "credential_default_source": "api_key",
            "parallel_fwdbwd_chunks": True,
            "proto_compress_fwdbwd": False,
            "fwdbwd_max_chunk_len": base.cfg.max_batch,  # the largest batch bucket
            "use_pyqwest_transport": False,
            "sample_use_retrieve_futures": False,
            "custom_loss_server_side": False,
            "sample_join_sampling_session": False,
        }

    @app.post(api + "/client/dynamic_config")
    async def dynamic_config(request: Request):
        return {"refresh_interval_sec": 300, "sample_cancel_enabled": False}

    @app.post(api + "/create_session")
    async def create_session(request: Request):
        body = await json_of(request)
        session = service.registry.new_session(
            tags=list(body.get("tags") or []), user_metadata=dict(body.get("user_metadata") or {})
        )
        return {"session_id": session.session_id, "type": "create_session"}

    @app.post(api + "/session_heartbeat")
    async def heartbeat(request: Request):
        body = await json_of(request)
        service.registry.session(str(body.get("session_id"))).last_heartbeat = time.time()
        return {"type": "session_heartbeat"}

    @app.post(api + "/sessions/{session_id}/finish")
    async def finish(session_id: str, request: Request):
        service.finish(session_id, await json_of(request))
        return {"type": "finish"}

    @app.post(api + "/telemetry")
    async def telemetry(request: Request):
        return {"status": "accepted"}

    @app.get(api + "/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get(api + "/get_server_capabilities")
    async def capabilities():
        model = {"max_context_length": base.context_window, "trainable": True, "sampleable": True}
        return {"supported_models": [{"model_name": name, **model} for name in sorted(service.names)]}

    # -- training -------------------------------------------------------------------------------

    @app.post(api + "/create_model")
    async def create_model(request: Request):
        return await run_in_threadpool(service.create_model, await json_of(request))

    @app.post(api + "/get_info")
    async def get_info(request: Request):
        return service.get_info(await json_of(request))

    @app.post(api + "/forward_backward")
    async def forward_backward(request: Request):
        body = await body_of(request)
        if request.headers.get("content-encoding", "identity") not in ("identity", ""):
            encoding = request.headers["content-encoding"]
            return {
                "request_id": service.futures.failed(
                    UserError(f"Content-Encoding {encoding} is not supported")
                )
            }
        return await run_in_threadpool(service.forward_backward, body)

    @app.post(api + "/optim_step")
    async def optim_step(request: Request):
        return await run_in_threadpool(service.optim_step, await json_of(request))

    @app.post(api + "/save_weights")
    async def save_weights(request: Request):
        return await run_in_threadpool(service.save_weights, await json_of(request))

    @app.post(api + "/save_weights_for_sampler")
    async def save_weights_for_sampler(request: Request):
        return await run_in_threadpool(service.save_weights_for_sampler, await json_of(request))

    @app.post(api + "/load_weights")
    async def load_weights(request: Request):
        return await run_in_threadpool(service.load_weights, await json_of(request))

    # -- sampling -------------------------------------------------------------------------------

    @app.post(api + "/create_sampling_session")
    async def create_sampling_session(request: Request):
        return await run_in_threadpool(service.create_sampling_session, await json_of(request))

    @app.post(api + "/join_sampling_session")
    async def join_sampling_session(request: Request):
        body = await json_of(request)
        sampler = service.registry.sampler(body.get("sampling_session_id"))
        session = service.registry.session(sampler.sampler_id.split(":")[0])
        session.sampler_joins += 1
        return {"client_counter": session.sampler_joins, "type": "join_sampling_session"}

    @app.get(api + "/samplers/{sampler_id}")
    async def get_sampler(sampler_id: str):
        return service.get_sampler(sampler_id)

    @app.post(api + "/asample")
    async def asample(request: Request):
        return await run_in_threadpool(service.asample, await json_of(request))

    # -- futures --------------------------------------------------------------------------------

    @app.post(api + "/retrieve_future")
    async def retrieve_future(request: Request):
        body = await json_of(request)
        request_id = body.get("request_id")
        if not isinstance(request_id, str):
            return {"error": "retrieve_future: request_id must be a string", "category": "user"}
        try:
            payload = await service.futures.wait(request_id, poll_timeout)
        except NotFound as e:
            return {"error": str(e), "category": "user"}
        if payload is None:
            return {"type": "try_again", "request_id": request_id, "queue_state": "active"}
        if payload.proto is not None:
            return Response(payload.proto, media_type=PROTO)
        return payload.json

    # -- runs and checkpoints -------------------------------------------------------------------

    @app.get(api + "/training_runs")
    async def training_runs(limit: int = 20, offset: int = 0):
        ids = service.store.run_ids()
        page = [service.store.training_run(i) for i in ids[offset : offset + limit]]
        return {"training_runs": page, "cursor": {"offset": offset, "limit": limit, "total_count": len(ids)}}

    @app.get(api + "/training_runs/{training_run_id}")
    async def training_run(training_run_id: str):
        return service.store.training_run(training_run_id)

    @app.get(api + "/training_runs/{training_run_id}/checkpoints")
    async def checkpoints(training_run_id: str):
        return {"checkpoints": service.store.checkpoints(training_run_id)}

    @app.delete(api + "/training_runs/{training_run_id}/checkpoints/{checkpoint_id:path}")
    async def delete_checkpoint(training_run_id: str, checkpoint_id: str):
        service.store.delete(training_run_id, checkpoint_id)
        return {}

    @app.get(api + "/checkpoints")
    async def all_checkpoints(limit: int = 100, offset: int = 0):
        found = [c for i in service.store.run_ids() for c in service.store.checkpoints(i)]
        return {
            "checkpoints": found[offset : offset + limit],
            "cursor": {"offset": offset, "limit": limit, "total_count": len(found)},
        }

    @app.post(api + "/weights_info")
    async def weights_info(request: Request):
        return service.weights_info(await json_of(request))

    @app.exception_handler(404)
    async def not_found(request: Request, exc):
        return _error(404, f"{request.method} {request.url.path} is not an endpoint of this server")

    return app
