"""Small comparisons for the preference tests (texts identify them)."""

from __future__ import annotations

from jaxcook.preference import Comparison, LabeledComparison


def reply(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def labeled(k: int, label: str = "A") -> LabeledComparison:
    """Prompt "question k", completion A "good k", completion B "bad k"."""
    prompt = [{"role": "user", "content": f"question {k}"}]
    return LabeledComparison(Comparison(prompt, reply(f"good {k}"), reply(f"bad {k}")), label)
