"""Comparisons: a prompt, two completions of it, and (when labeled) which one is preferred.

A completion is a list of messages that continues the prompt (usually one assistant message).
Label "A" prefers `completion_A`, "B" prefers `completion_B`, "Tie" prefers neither. `swap()`
exchanges the completions (and the label), so a comparison and its swap say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxcook.renderers import Message

Label = Literal["A", "B", "Tie"]
LABELS: tuple[Label, ...] = ("A", "B", "Tie")
_SWAPPED: dict[str, Label] = {"A": "B", "B": "A", "Tie": "Tie"}

# A comparison with where it came from (`path:line`, `name[split] row i`), for errors and logs.
ComparisonRecord = tuple[str, "LabeledComparison"]


@dataclass(frozen=True)
class Comparison:
    prompt_conversation: list[Message]
    completion_A: list[Message]
    completion_B: list[Message]

    def swap(self) -> Comparison:
        return Comparison(self.prompt_conversation, self.completion_B, self.completion_A)


@dataclass(frozen=True)
class LabeledComparison:
    comparison: Comparison
    label: Label

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {list(LABELS)}, got {self.label!r}")

    def swap(self) -> LabeledComparison:
        return LabeledComparison(self.comparison.swap(), _SWAPPED[self.label])

    def chosen_rejected(self) -> tuple[list[Message], list[Message]]:
        """(preferred completion, other completion); a Tie has neither."""
        if self.label == "Tie":
            raise ValueError("a Tie has no chosen and rejected completion")
        c = self.comparison
        return (c.completion_A, c.completion_B) if self.label == "A" else (c.completion_B, c.completion_A)
