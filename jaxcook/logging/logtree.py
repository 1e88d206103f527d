"""Nested HTML reports (a log tree): scopes holding text, tables, conversations and token weights.

    with logtree.report(log_dir / "reports" / "eval_000020.html", title="Evals at step 20"):
        with logtree.scope("eval/qa"):               # a collapsible section; scopes nest
            logtree.text("2 of 3 correct")
            logtree.table([{"prompt": ..., "response": ..., "exact_match": 1.0}, ...])
            logtree.conversation(messages)
            logtree.weighted_tokens(texts, weights)  # a rendered datum: each token shaded by its loss weight

Outside an active `report`, every call is a no-op, so library code (the evaluators, the
workflows) logs unconditionally and only costs something when a report is being written. The page
is one self-contained file: inline CSS, no scripts, all text HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcook.logging.html_report import _CSS, _render_message

_TREE_CSS = """
details{margin:.3em 0 .3em .6em;border-left:2px solid #ddd;padding-left:.6em}
summary{cursor:pointer;font-weight:600}
.tok{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.9em;border-radius:2px}
th{border:1px solid #ddd;padding:.1em .5em;background:#f0f0f0;text-align:left}
"""


@dataclass
class _Node:
    title: str
    parts: list = field(default_factory=list)  # html strings and child _Nodes


_STACK: list[_Node] = []  # the open scopes of the active report (root first)


def active() -> bool:
    return bool(_STACK)


@contextmanager
def report(path: str | os.PathLike, *, title: str):
    """Collect a log tree while active; write it to `path` (atomically) on exit."""
    root = _Node(title)
    outer = list(_STACK)
    _STACK[:] = [root]
    try:
        yield root
    finally:
        _STACK[:] = outer
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render(root), encoding="utf-8")
        os.replace(tmp, path)


@contextmanager
def scope(title: str, *, open: bool = False):  # noqa: A002 - the HTML attribute's name
    """A nested, collapsible section (`open` = expanded when the page loads)."""
    if not _STACK:
        yield
        return
    node = _Node(title)
    node.open = open
    _STACK[-1].parts.append(node)
    _STACK.append(node)
    try:
        yield
    finally:
        _STACK.pop()


def _add(fragment: str) -> None:
    if _STACK:
        _STACK[-1].parts.append(fragment)


def text(value: str) -> None:
    _add(f"<p>{_esc(value)}</p>")


def table(rows: Sequence[Mapping[str, Any]], *, max_chars: int = 2000) -> None:
    """A table with one column per key (the union of the rows' keys, in first-seen order)."""
    if not _STACK or not rows:
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{_esc(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c, ''), max_chars)}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    _add(f"<table><tr>{head}</tr>{body}</table>")


def metrics_table(metrics: Mapping[str, Any]) -> None:
    """A two-column table (metric, value) of a metrics dict."""
    table([{"metric": k, "value": v} for k, v in metrics.items()])


def conversation(messages: Sequence[Mapping[str, Any]], *, max_chars: int = 20_000) -> None:
    if _STACK:
        _add("".join(_render_message(m, max_chars) for m in messages))


def weighted_tokens(pieces: Sequence[str], weights: Sequence[float]) -> None:
    """Token texts shaded by their loss weight (white = 0, green = the largest weight); hovering a
    token shows its weight."""
    if not _STACK:
        return
    top = max((float(w) for w in weights), default=0.0) or 1.0
    spans = []
    for piece, w in zip(pieces, weights, strict=True):
        alpha = max(0.0, min(1.0, float(w) / top))
        spans.append(
            f'<span class="tok" title="weight {float(w):.4g}" '
            f'style="background:rgba(46,158,87,{alpha:.3f})">{_esc(piece)}</span>'
        )
    _add(f"<div>{''.join(spans)}</div>")


def datum(datum, tokenizer) -> None:
    """A supervised `Datum`: its target tokens, shaded by `loss_fn_inputs["weights"]`."""
    if not _STACK:
        return
    targets = [int(t) for t in datum.loss_fn_inputs["target_tokens"]]
    weights = [float(w) for w in datum.loss_fn_inputs["weights"]]
    weighted_tokens([tokenizer.decode([t]) for t in targets], weights)


def render(root: _Node) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{_esc(root.title)}</title><style>{_CSS}{_TREE_CSS}</style></head><body>",
            f"<h1>{_esc(root.title)}</h1>",
            *(_render_part(p) for p in root.parts),
            "</body></html>\n",
        ]
    )


def _render_part(part) -> str:
    if isinstance(part, str):
        return part
    inner = "\n".join(_render_part(p) for p in part.parts)
    flag = " open" if getattr(part, "open", False) else ""
    return f"<details{flag}><summary>{_esc(part.title)}</summary>\n{inner}\n</details>"


def _cell(value: Any, max_chars: int) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}" if math.isfinite(value) else str(value)
    value = str(value)
    if len(value) > max_chars:
        value = value[:max_chars] + f" ... ({len(value) - max_chars:,} more characters)"
    return f"<pre>{_esc(value)}</pre>"


def _esc(value: str) -> str:
    return html.escape(value, quote=True)
