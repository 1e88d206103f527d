"""Reward (preference) model data: a comparison as one chat whose only trained token is the verdict.

The chat (tinker-cookbook's `ComparisonRendererFromChatRenderer`):

    prompt_conversation...
    system:    "==== Completion A ===="
    completion_A...
    system:    "==== Completion B ===="
    completion_B...
    system:    "==== Preference ===="
    assistant: label                       ("A", "B" or "Tie"; only in the supervised example)

The supervised example is cut right after its first trained token, so the datum trains exactly one
target: the first token of the label as the renderer writes it at the start of an assistant
message. With SmolLM2's tokenizer (chatml) "A" and "B" are one token each (ids 49, 50) and "Tie"
is two ("T" 68, "ie" 519): a Tie trains "T", and a scorer reads the probability of "T".
`label_token_ids` holds these ids, found by rendering; `build_generation_prompt(c)` followed by
the label token is, token for token, the supervised sequence (a test checks it), so a reward model
trained on these datums is scored on the same prompt.

A too-long example cannot be right-truncated without losing its label, so it is dropped (counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np

from jaxcook.data.builders import Subset
from jaxcook.data.dataset import ConversationDataset
from jaxcook.data.datum import OnBad, datum_from_model_input_weights
from jaxcook.data.errors import DataFormatError, ExampleTooLongError
from jaxcook.preference.types import LABELS, Comparison, ComparisonRecord, Label, LabeledComparison
from jaxcook.renderers import Message, Renderer, RendererError, TrainOnWhat
from jaxcook.types import Datum, ModelInput

HEADER_A = "==== Completion A ===="
HEADER_B = "==== Completion B ===="
HEADER_PREFERENCE = "==== Preference ===="

SwapMode = Literal["random", "both"]


class ComparisonRenderer:
    """Comparisons -> reward-model prompts and single-token supervised examples, over a chat renderer."""

    def __init__(self, renderer: Renderer):
        self.renderer = renderer
        self._label_ids: dict[Label, int] | None = None

    @property
    def tokenizer(self):
        return self.renderer.tokenizer

    def to_messages(self, comparison: Comparison) -> list[Message]:
        """The chat the reward model reads (without the verdict)."""
        return [
            *comparison.prompt_conversation,
            {"role": "system", "content": HEADER_A},
            *comparison.completion_A,
            {"role": "system", "content": HEADER_B},
            *comparison.completion_B,
            {"role": "system", "content": HEADER_PREFERENCE},
        ]

    def build_generation_prompt(self, comparison: Comparison) -> ModelInput:
        """The prompt whose next token is the verdict."""
        return self.renderer.build_generation_prompt(self.to_messages(comparison))

    def build_supervised_example(
        self, labeled: LabeledComparison, *, where: str = "comparison"
    ) -> tuple[ModelInput, np.ndarray]:
        """(tokens, weights) ending on the label's first token, the only token with weight 1."""
        messages = [*self.to_messages(labeled.comparison), {"role": "assistant", "content": labeled.label}]
        try:
            model_input, weights_T = self.renderer.build_supervised_example(
                messages, TrainOnWhat.LAST_ASSISTANT_MESSAGE
            )
        except RendererError as e:
            raise DataFormatError(f"{where}: {e}") from e
        trained = np.flatnonzero(weights_T > 0)
        if not len(trained):  # cannot happen with a well-behaved renderer; say so if it does
            raise DataFormatError(f"{where}: renderer {self.renderer.name} trained no token of the label")
        end = int(trained[0]) + 1
        return ModelInput.from_ints(model_input.to_ints()[:end]), weights_T[:end]

    def to_datum(
        self, labeled: LabeledComparison, *, max_length: int | None, where: str = "comparison"
    ) -> Datum:
        """The datum (one trained target); longer than `max_length` is `ExampleTooLongError`."""
        model_input, weights_T = self.build_supervised_example(labeled, where=where)
        if max_length is not None and model_input.length > max_length:
            raise ExampleTooLongError(
                f"{where}: {model_input.length} tokens up to the label > max_length={max_length} "
                "(cutting would remove the label)"
            )
        return datum_from_model_input_weights(model_input, weights_T, reduction="none", where=where)

    @property
    def label_token_ids(self) -> dict[Label, int]:
        """{"A": id, "B": id, "Tie": id}: the token each verdict starts with (what a scorer reads)."""
        if self._label_ids is None:
            probe = Comparison(
                [{"role": "user", "content": "?"}],
                [{"role": "assistant", "content": "1"}],
                [{"role": "assistant", "content": "2"}],
            )
            ids: dict[Label, int] = {}
            for label in LABELS:
                tokens = self.build_supervised_example(LabeledComparison(probe, label))[0].to_ints()
                ids[label] = tokens[-1]
            if len(set(ids.values())) != len(LABELS):
                raise RendererError(
                    f"renderer {self.renderer.name}: the labels start with the same token ({ids}); "
                    "a reward model could not tell its verdicts apart"
                )
            self._label_ids = ids
        return self._label_ids


class ComparisonRMDataset(ConversationDataset):
    """Reward-model datums from comparisons, shuffled per epoch like the SFT datasets.

    `swap="random"`: each comparison is shown once, swapped (A <-> B, label flipped) with
    probability 1/2; the coin is a pure function of `(seed, epoch, record index)`, so a resumed run
    sees the same order. `swap="both"`: each comparison is shown in both orders, so a batch of
    `batch_size` comparisons holds 2 x batch_size datums. Either way the model cannot learn a
    position bias from the data. Ties are kept (the label "Tie").
    """

    def __init__(
        self,
        records: Sequence[ComparisonRecord],
        comparison_renderer: ComparisonRenderer,
        *,
        batch_size: int,
        max_length: int | None,
        swap: SwapMode = "random",
        seed: int = 0,
        on_bad_row: OnBad = "raise",
        name: str = "comparisons",
    ):
        if swap not in ("random", "both"):
            raise ValueError(f"swap must be 'random' or 'both', got {swap!r}")
        if on_bad_row not in ("raise", "skip"):
            raise ValueError(f"on_bad_row must be 'raise' or 'skip', got {on_bad_row!r}")
        self.comparison_renderer, self.max_length, self.swap = comparison_renderer, max_length, swap
        self.on_bad_row = on_bad_row
        self.counts: Counter[str] = Counter()
        super().__init__(records, None, batch_size=batch_size, seed=seed, name=name)

    def swapped(self, record_index: int) -> bool:
        """Whether `swap="random"` shows record `record_index` swapped in the current epoch."""
        return bool(np.random.default_rng([self.seed, self.epoch, int(record_index)]).random() < 0.5)

    def get_batch(self, i: int) -> list[Datum]:
        return self.get_batch_with_wheres(i)[0]

    def get_batch_with_wheres(self, i: int) -> tuple[list[Datum], list[str]]:
        """Batch `i` and the record `where` of each of its datums."""
        indices = self.batch_indices(i)
        rows = Subset(self.records, indices)
        out, wheres = [], []
        for k, j in enumerate(indices):
            try:
                where, labeled = rows[k]
                if self.swap == "both":
                    shown = [labeled, labeled.swap()]
                else:
                    shown = [labeled.swap() if self.swapped(j) else labeled]
                out += [
                    self.comparison_renderer.to_datum(x, max_length=self.max_length, where=where)
                    for x in shown
                ]
                wheres += [where] * len(shown)
            except DataFormatError:
                if self.on_bad_row == "raise":
                    raise
                self.counts["data/skipped_bad_row"] += 1
            except ExampleTooLongError:
                self.counts["data/dropped_too_long"] += 1
        self.counts["data/datums"] += len(out)
        return out, wheres

    def stats(self) -> dict[str, int]:
        return dict(self.counts)
