"""HTML reports of sampled rollouts: `log_dir/reports/iteration_000123.html`, one self-contained page.

Each item is one conversation or trajectory: its messages, its reward and its metrics. All text is
HTML-escaped (model output can contain anything, `<script>` included); the page has inline CSS and
no scripts or external assets. Long messages are cut at `max_chars` with a note saying how much.

    write_rollout_report(log_dir, iteration, [
        ReportItem(messages=[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                   reward=1.0, metrics={"correct": 1.0}, title="group 0, sample 0"),
    ])
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORTS_DIR = "reports"

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:60em;color:#222;background:#fff}
h1{font-size:1.3em}h2{font-size:1.05em;margin:0 0 .4em}
.item{border:1px solid #ccc;border-radius:6px;padding:.6em .9em;margin:1em 0}
.msg{margin:.4em 0;padding:.3em .6em;border-left:4px solid #999;background:#f7f7f7}
.role{font-weight:600;font-size:.85em;color:#555}
.system{border-color:#8a8a8a}.user{border-color:#3b7dd8}.assistant{border-color:#2e9e57}
.tool{border-color:#c08a1e}
pre{white-space:pre-wrap;word-wrap:break-word;margin:.2em 0;font-family:ui-monospace,monospace;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0}
td{border:1px solid #ddd;padding:.1em .5em}
.cut{color:#a33;font-style:italic}
"""


@dataclass(frozen=True, kw_only=True)
class ReportItem:
    """One conversation: messages ({"role", "content", ...}), its reward and metrics, a heading."""

    messages: Sequence[Mapping[str, Any]]
    reward: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    title: str = ""


def report_path(log_dir: str | os.PathLike, iteration: int, suffix: str = "") -> Path:
    """`log_dir/reports/iteration_000123.html` (`iteration_000123_<suffix>.html` with a suffix)."""
    if suffix and not re.fullmatch(r"[A-Za-z0-9_-]+", suffix):
        raise ValueError(f"report suffix {suffix!r} may hold only letters, digits, '_' and '-'")
    name = f"iteration_{iteration:06d}{'_' + suffix if suffix else ''}.html"
    return Path(log_dir) / REPORTS_DIR / name


def write_rollout_report(
    log_dir: str | os.PathLike,
    iteration: int,
    items: Sequence[ReportItem | Mapping[str, Any]],
    *,
    suffix: str = "",
    title: str | None = None,
    max_chars: int = 20_000,
) -> Path:
    """Write the report page for `iteration` and return its path (the file is replaced atomically;
    on a multi-host run only process 0 writes it)."""
    from jaxcook.engine.distributed import is_main_process

    path = report_path(log_dir, iteration, suffix)
    if not is_main_process():
        return path
    page = render_rollout_report(
        [_as_item(item, i) for i, item in enumerate(items)],
        title=title or f"Rollouts, iteration {iteration}{' (' + suffix + ')' if suffix else ''}",
        max_chars=max_chars,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_rollout_report(items: Sequence[ReportItem], *, title: str, max_chars: int = 20_000) -> str:
    """The report page as a string."""
    rewards = [it.reward for it in items if it.reward is not None]
    summary = f"{len(items)} rollouts"
    if rewards:
        summary += f", mean reward {sum(rewards) / len(rewards):.4g}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1><p>{_esc(summary)}</p>",
    ]
    for index, item in enumerate(items):
        parts.append(_render_item(index, item, max_chars))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _render_item(index: int, item: ReportItem, max_chars: int) -> str:
    heading = item.title or f"rollout {index}"
    if item.reward is not None:
        heading += f" | reward {_format_number(item.reward)}"
    out = [f'<div class="item"><h2>{_esc(heading)}</h2>']
    if item.metrics:
        rows = "".join(
            f"<tr><td>{_esc(str(k))}</td><td>{_esc(_format_number(v))}</td></tr>"
            for k, v in item.metrics.items()
        )
        out.append(f"<table>{rows}</table>")
    for message in item.messages:
        out.append(_render_message(message, max_chars))
    out.append("</div>")
    return "\n".join(out)


def _render_message(message: Mapping[str, Any], max_chars: int) -> str:
    role = str(message.get("role", "?"))
    label = role + "".join(f" ({k}: {message[k]})" for k in ("name", "tool_call_id") if message.get(k))
    css = role if role in ("system", "user", "assistant", "tool") else ""
    body = [f'<div class="msg {css}"><div class="role">{_esc(label)}</div>']
    content = message.get("content", "")
    if isinstance(content, str):
        body.append(_pre(content, max_chars))
    else:  # a list of parts: {"type": "text", "text": ...}, {"type": "thinking", "thinking": ...}, ...
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                body.append(_pre(str(part.get("text", "")), max_chars))
            elif kind == "thinking":
                thinking = _pre(str(part.get("thinking", "")), max_chars)
                body.append(f"<details><summary>thinking</summary>{thinking}</details>")
            else:
                body.append(_pre(json.dumps(part, default=_json_default, ensure_ascii=False), max_chars))
    for key in ("tool_calls", "unparsed_tool_calls"):
        if message.get(key):
            calls = json.dumps(message[key], default=_json_default, ensure_ascii=False, indent=1)
            body.append(f'<div class="role">{key.replace("_", " ")}</div>{_pre(calls, max_chars)}')
    body.append("</div>")
    return "".join(body)


def _pre(text: str, max_chars: int) -> str:
    cut = ""
    if len(text) > max_chars:
        cut = f'<div class="cut">({len(text) - max_chars:,} more characters not shown)</div>'
        text = text[:max_chars]
    return f"<pre>{_esc(text)}</pre>{cut}"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)  # ToolCall and friends
    return str(obj)


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _as_item(item: ReportItem | Mapping[str, Any], index: int) -> ReportItem:
    if isinstance(item, ReportItem):
        return item
    if not isinstance(item, Mapping) or "messages" not in item:
        raise ValueError(f"report item {index} needs 'messages' (and optionally reward, metrics, title)")
    unknown = set(item) - {"messages", "reward", "metrics", "title"}
    if unknown:
        raise ValueError(f"report item {index} has unknown keys {sorted(unknown)}")
    return ReportItem(**item)
