"""Blocking calls from inside a running asyncio event loop (a Jupyter cell runs inside one).

The workflows drive rollouts with `asyncio.run`, which refuses to start while the calling thread
already runs a loop, as every IPython / Jupyter kernel thread does. `call_blocking(fn, ...)` runs
`fn` on a fresh thread in that case (its own loop, none running), waits, and returns its result or
raises its exception; elsewhere it just calls `fn`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def call_blocking(fn, /, *args, **kwargs):
    if not in_running_loop():
        return fn(*args, **kwargs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-run") as pool:
        return pool.submit(fn, *args, **kwargs).result()
