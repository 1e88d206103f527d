"""Timing spans (`scope`) exported as a Chrome / Perfetto trace of a run (`log_dir/trace.json`).

    with tracing(log_dir / "trace.json"):        # collect spans; the file is written on exit
        with scope("sft/step", step=3):          # a span: name, wall time, thread, arguments
            ...

    @scope("eval/sampling")                      # or a decorator (bare `@scope` = the function name)
    def evaluate(...): ...

Open the file in https://ui.perfetto.dev or chrome://tracing. Each span is a complete event
(`"ph": "X"`, `ts` and `dur` in microseconds since the trace started) of this process (`pid`) and its
thread (`tid`), so spans nest per thread. Without an active `tracing`, a scope costs one lookup.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

_ACTIVE: list[Tracer] = []  # the tracer spans go to (process-wide: worker threads record too)


class Tracer:
    def __init__(self):
        self.t0 = time.perf_counter()
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._threads: dict[int, str] = {}

    def add(self, name: str, start: float, end: float, args: dict) -> None:
        thread = threading.current_thread()
        event = {
            "name": name,
            "cat": "jaxcook",
            "ph": "X",
            "ts": round((start - self.t0) * 1e6, 3),
            "dur": round((end - start) * 1e6, 3),
            "pid": os.getpid(),
            "tid": thread.ident,
            "args": {k: _jsonable(v) for k, v in args.items()},
        }
        with self._lock:
            self.events.append(event)
            self._threads.setdefault(thread.ident, thread.name)

    def trace(self) -> dict:
        """The Chrome trace-event JSON object: the spans and a name for each thread."""
        with self._lock:
            names = [
                {"name": "thread_name", "ph": "M", "pid": os.getpid(), "tid": tid, "args": {"name": name}}
                for tid, name in self._threads.items()
            ]
            return {
                "traceEvents": names + sorted(self.events, key=lambda e: e["ts"]),
                "displayTimeUnit": "ms",
            }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.trace()))
        os.replace(tmp, path)
        return path


@contextmanager
def tracing(path: str | Path | None = None):
    """Collect every span opened while active (any thread); write them to `path` on exit."""
    tracer = Tracer()
    _ACTIVE.append(tracer)
    try:
        yield tracer
    finally:
        _ACTIVE.remove(tracer)
        if path is not None:
            tracer.write(path)


def record(name: str, start: float, end: float, /, **args) -> None:
    """Add a span measured elsewhere (`time.perf_counter()` values), e.g. submit -> result of a future."""
    if _ACTIVE:
        _ACTIVE[-1].add(name, start, end, args)


class scope:  # noqa: N801 - used as a decorator and a context manager, like contextlib's
    """A timed span: `with scope(name, **args):` or `@scope(name)` / `@scope`."""

    def __init__(self, name: str | Callable | None = None, /, **args):
        self.fn = name if callable(name) else None
        self.name = self.fn.__qualname__ if self.fn is not None else name
        self.args = args
        self._starts: list[float] = []
        if self.fn is not None:
            functools.update_wrapper(self, self.fn)

    def __enter__(self):
        self._starts.append(time.perf_counter())
        return self

    def __exit__(self, *exc):
        start, end = self._starts.pop(), time.perf_counter()
        if _ACTIVE:
            _ACTIVE[-1].add(self.name, start, end, self.args)
        return False

    def __call__(self, *args, **kwargs):
        if self.fn is None:  # @scope("name") applied to a function
            fn = args[0]
            name = self.name or fn.__qualname__

            @functools.wraps(fn)
            def wrapped(*a, **kw):
                with scope(name, **self.args):
                    return fn(*a, **kw)

            return wrapped
        with scope(self.name, **self.args):  # bare @scope
            return self.fn(*args, **kwargs)


def _jsonable(value):
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
