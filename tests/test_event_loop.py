"""call_blocking: a function that uses asyncio.run works from inside a running event loop."""

import asyncio
import threading

import pytest

from jaxcook.event_loop import call_blocking


def uses_asyncio_run(x):
    async def double():
        return 2 * x

    coro = double()
    try:
        return asyncio.run(coro), threading.current_thread().name
    except RuntimeError:
        coro.close()  # refused inside a running loop: never awaited
        raise


def test_plain_call_outside_a_loop():
    assert call_blocking(uses_asyncio_run, 3) == (6, threading.current_thread().name)


def test_inside_a_running_loop_runs_on_another_thread():
    async def cell():  # what a Jupyter cell is: code run by the kernel's event loop
        with pytest.raises(RuntimeError, match="running event loop"):
            uses_asyncio_run(1)
        return call_blocking(uses_asyncio_run, 4)

    value, thread = asyncio.run(cell())
    assert value == 8 and thread.startswith("jaxcook-run")


def test_exceptions_reach_the_caller():
    def boom():
        raise ValueError("bad key 'x'")

    async def cell():
        return call_blocking(boom)

    with pytest.raises(ValueError, match="bad key 'x'"):
        asyncio.run(cell())
