"""The futures table: every long call returns a `request_id` at once; `retrieve_future`
long-polls it.

A result is encoded (protobuf bytes or a JSON dict) on the engine thread as soon as it is
ready, so a poll only hands it over. Finished entries are kept (a client may poll again after a
timeout) up to `keep` of them, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from jaxcook.serve.errors import NotFound, error_result


@dataclass(frozen=True)
class Payload:
    """A finished request's body: protobuf bytes, or a JSON-able dict (a result or an error)."""

    proto: bytes | None = None
    json: dict | None = None


class FutureStore:
    def __init__(self, *, keep: int = 4096):
        self._entries: OrderedDict[str, Future] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def add(self, future: Future, encode: Callable[[object], Payload | dict]) -> str:
        """Register `future`; its result goes through `encode` (a dict means JSON)."""
        request_id = uuid.uuid4().hex
        payload: Future = Future()

        def done(f: Future) -> None:
            try:
                out = encode(f.result())
                payload.set_result(out if isinstance(out, Payload) else Payload(json=out))
            except BaseException as e:  # noqa: BLE001 - every failure becomes the request's result
                payload.set_result(Payload(json=error_result(e)))

        future.add_done_callback(done)
        with self._lock:
            self._entries[request_id] = payload
            while len(self._entries) > self.keep:
                oldest = next(iter(self._entries))
                if not self._entries[oldest].done():
                    break
                del self._entries[oldest]
        return request_id

    def failed(self, exc: BaseException) -> str:
        """A request that failed at submission: its result is the error."""
        f: Future = Future()
        f.set_exception(exc)
        return self.add(f, lambda _: {})

    async def wait(self, request_id: str, timeout: float) -> Payload | None:
        """The payload, or None if it is not ready within `timeout` seconds."""
        with self._lock:
            future = self._entries.get(request_id)
        if future is None:
            raise NotFound(f"unknown request_id {request_id!r}")
        if not future.done():
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
            except TimeoutError:
                return None
        return future.result()

    def pending(self) -> int:
        with self._lock:
            return sum(not f.done() for f in self._entries.values())


def then(future: Future, fn) -> Future:
    """A future of `fn(future.result())`."""
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            out.set_result(fn(f.result()))
        except BaseException as e:  # noqa: BLE001 - handed on through the future
            out.set_exception(e)

    future.add_done_callback(done)
    return out
