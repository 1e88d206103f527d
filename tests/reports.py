"""What the tests read back from a run's log dir: its trace spans and its eval reports."""

from __future__ import annotations

import json
from pathlib import Path


def spans(log_dir) -> dict[str, list[dict]]:
    """name -> the args of each complete span (`"ph": "X"`) in `log_dir/trace.json`, in time order."""
    trace = json.loads((Path(log_dir) / "trace.json").read_text())
    out: dict[str, list[dict]] = {}
    for event in trace["traceEvents"]:
        if event["ph"] == "X":
            assert event["dur"] >= 0 and event["ts"] >= 0
            out.setdefault(event["name"], []).append(event["args"])
    return out


def steps(log_dir, name: str) -> list[int]:
    return [args["step"] for args in spans(log_dir).get(name, [])]


def eval_report(log_dir, step: int) -> str:
    return (Path(log_dir) / "reports" / f"eval_{step:06d}.html").read_text()
