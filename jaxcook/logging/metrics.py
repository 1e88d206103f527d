"""Metrics loggers: the `MetricsLogger` protocol, `metrics.jsonl`, and a multiplexer over several sinks.

Metrics are flat dicts with "area/name" keys (`train/loss`, `optim/lr`) logged once per step. In
`log_dir/metrics.jsonl` every row is `{"step": int, **metrics}` and a step appears at most once: a
second `log_metrics` call for the last step merges into its row, and resuming at step s first drops
every row with step >= s (`truncate_metrics`). Non-finite values are written (as JSON `NaN` /
`Infinity`, which Python's `json` reads back) and reported by `MultiplexLogger.log_metrics`;
what to do about them is the workflow's decision.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

METRICS_FILE = "metrics.jsonl"

logger = logging.getLogger(__name__)

Scalar = int | float | str | bool


@runtime_checkable
class MetricsLogger(Protocol):
    """A sink for per-step metrics and the run's config."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def log_hparams(self, config: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def to_scalars(metrics: Mapping[str, Any]) -> dict[str, Scalar]:
    """A flat metrics dict with every value a Python scalar (0-d / size-1 arrays are unwrapped).

    Works on numpy and JAX arrays alike (`np.asarray` fetches a device scalar); a key that is not a
    string, a nested dict, or an array with more than one element is an error naming the key.
    """
    out: dict[str, Scalar] = {}
    for key, value in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f"metric key {key!r} is not a string (metrics are flat 'area/name' dicts)")
        if key == "step":
            raise ValueError("'step' is not a metric name; pass the step as log_metrics(metrics, step)")
        if isinstance(value, bool | int | float | str):
            out[key] = value
            continue
        if isinstance(value, Mapping):
            raise TypeError(f"metric {key!r} is a dict; flatten it into 'area/name' keys")
        array = np.asarray(value)
        if array.size != 1 or array.dtype == object:
            raise TypeError(f"metric {key!r} is not a scalar (shape {array.shape}, dtype {array.dtype})")
        out[key] = array.reshape(()).item()
    return out


def nonfinite_keys(metrics: Mapping[str, Any]) -> list[str]:
    """Keys whose value is a float NaN or +-inf."""
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


class JsonlLogger:
    """Appends one `{"step": ..., **metrics}` row per step to `log_dir/metrics.jsonl`, flushed at once.

    Steps must not decrease; call `truncate_metrics(log_dir, s)` before resuming at step s (as
    `setup_logging(start_step=s)` does).
    """

    def __init__(self, log_dir: str | os.PathLike):
        self.path = Path(log_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows, end = _read_rows(self.path, drop_partial_tail=True)
        if self.path.exists():
            with open(self.path, "r+b") as f:  # cut a half-written last row a crash may have left
                f.truncate(end)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":  # a last row written without its newline (by hand)
                        f.write(b"\n")
        self._last_step: int | None = rows[-1][1]["step"] if rows else None
        self._last_row: dict | None = rows[-1][1] if rows else None
        self._last_offset = rows[-1][0] if rows else 0
        self._file = open(self.path, "ab")  # noqa: SIM115 (held open for the run)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        step = _check_step(step)
        scalars = to_scalars(metrics)
        if self._last_step is not None and step < self._last_step:
            raise ValueError(
                f"{self.path}: metrics for step {step} after step {self._last_step}; steps must not "
                f"decrease (when resuming at step s, call truncate_metrics(log_dir, s) first)"
            )
        if step == self._last_step:
            row = {**self._last_row, **scalars}
            self._file.truncate(self._last_offset)
        else:
            row = {"step": step, **scalars}
            self._last_offset = self._file.tell()
        self._file.write(_encode(row))
        self._file.flush()
        self._last_step, self._last_row = step, row

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        pass  # the config goes to config.json (setup_logging)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


class MultiplexLogger:
    """Forwards to several loggers; converts metrics to scalars once and reports non-finite values."""

    def __init__(self, loggers: Sequence[MetricsLogger], *, on_close: Sequence[Callable[[], None]] = ()):
        self.loggers = list(loggers)
        self._on_close = list(on_close)
        self._closed = False

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> list[str]:
        """Log to every sink; return the keys whose values are NaN or infinite (also logged as a warning)."""
        scalars = to_scalars(metrics)
        bad = nonfinite_keys(scalars)
        if bad:
            logger.warning(
                "step %d: non-finite metrics %s", step, ", ".join(f"{k}={scalars[k]}" for k in bad)
            )
        for sink in self.loggers:
            sink.log_metrics(scalars, step)
        return bad

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        for sink in self.loggers:
            sink.log_hparams(config)

    def close(self) -> None:
        """Close every sink (all of them, even if one fails; the first error is raised after)."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for close in [s.close for s in self.loggers] + self._on_close:
            try:
                close()
            except Exception as e:  # noqa: BLE001 (re-raised below, after the others closed)
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> MultiplexLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(log_dir: str | os.PathLike) -> list[dict]:
    """Every row of `log_dir/metrics.jsonl` ([] when there is none); a half-written last row is skipped."""
    return [row for _, row in _read_rows(Path(log_dir) / METRICS_FILE, drop_partial_tail=True)[0]]


def truncate_metrics(log_dir: str | os.PathLike, from_step: int) -> int:
    """Drop every row with step >= `from_step` from `log_dir/metrics.jsonl`; return how many were dropped.

    Called when a run resumes at `from_step`, so that no step appears twice. The file is rewritten
    atomically (a crash leaves the old or the new file, never a mix).
    """
    from_step = _check_step(from_step)
    path = Path(log_dir) / METRICS_FILE
    if not path.exists():
        return 0
    rows, end = _read_rows(path, drop_partial_tail=True)
    kept = [row for _, row in rows if row["step"] < from_step]
    if len(kept) == len(rows) and end == path.stat().st_size:
        return 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for row in kept:
            f.write(_encode(row))
    os.replace(tmp, path)
    return len(rows) - len(kept)


def _encode(row: Mapping[str, Any]) -> bytes:
    return (json.dumps(row) + "\n").encode("utf-8")


def _check_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    return int(step)


def _read_rows(path: Path, *, drop_partial_tail: bool) -> tuple[list[tuple[int, dict]], int]:
    """([(byte offset, row)], byte end of the last good row). A bad row is an error naming file and
    line, except a bad last line when `drop_partial_tail` (a write a crash cut short)."""
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    rows, offset, end = [], 0, 0
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, start=1):
        is_tail = lineno == len(lines)
        if is_tail and not line:
            break
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("row is not an object with an integer 'step'")
        except ValueError as e:
            if is_tail and drop_partial_tail:
                break
            raise ValueError(f"{path}:{lineno}: bad metrics row ({e})") from e
        rows.append((offset, row))
        offset += len(line) + 1
        end = min(offset, len(data))
    return rows, end
