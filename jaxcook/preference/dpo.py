"""DPO data: each labeled comparison becomes a (chosen, rejected) pair of datums.

A pair is two supervised datums of the same prompt, one per completion, with weight 1 on the
completion's assistant tokens (content and end-of-turn token, as the renderer trains them) and 0
on the prompt and headers. The weights are not normalised (`reduction="none"`): the DPO loss needs
each sequence's log-probability, `logp(seq) = sum_t weights_t * logprob_t`. The prompt tokens
are identical in both datums, so only the completions differ.

Batches put pair k at indices (2k, 2k + 1): chosen at even, rejected at odd indices. A "Tie" has
no chosen completion and is skipped (counted); label "B" is swapped so the chosen one comes first.
`check_pairs` is what the DPO loss path calls on whatever it is handed.

Truncation: a sequence longer than `max_length` is cut on the right (`too_long="truncate"`, as
tinker-cookbook does; each datum of the pair on its own) or the pair is dropped (`"drop"`). A pair
in which a completion has no trained token left is untrainable: skipped and counted, or an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from jaxcook.data.builders import Subset
from jaxcook.data.dataset import ConversationDataset
from jaxcook.data.datum import OnBad, TooLong, datum_from_model_input_weights
from jaxcook.data.errors import DataFormatError, ExampleTooLongError, UntrainableExampleError
from jaxcook.preference.types import ComparisonRecord, LabeledComparison
from jaxcook.renderers import Message, Renderer, RendererError, TrainOnWhat
from jaxcook.types import Datum, ModelInput


class DPOPairError(ValueError):
    """A list of datums that is not a sequence of (chosen, rejected) pairs."""


def render_completion(
    prompt: Sequence[Message], completion: Sequence[Message], renderer: Renderer, *, where: str
) -> tuple[ModelInput, np.ndarray]:
    """Tokens of `prompt + completion` and weights: 1 on the completion's assistant messages only."""
    if not completion:
        raise DataFormatError(f"{where}: the completion is empty")
    if not any(m.get("role") == "assistant" for m in completion):
        roles = [m.get("role") for m in completion]
        raise UntrainableExampleError(f"{where}: the completion has no assistant message; roles are {roles}")
    try:
        # `prepare` may put messages in front (a default system prompt); they belong to the prompt.
        prepared = renderer.prepare([*prompt, *completion])
        n_prompt = len(prepared) - len(completion)
        if prepared[n_prompt:] != list(completion):
            raise RendererError(f"renderer {renderer.name} rewrote the completion's messages in prepare()")
        flagged = [
            {**m, "trainable": i >= n_prompt and m.get("role") == "assistant"} for i, m in enumerate(prepared)
        ]
        return renderer.build_supervised_example(flagged, TrainOnWhat.CUSTOMIZED)
    except RendererError as e:
        raise DataFormatError(f"{where}: {e}") from e


def completion_datum(
    prompt: Sequence[Message],
    completion: Sequence[Message],
    renderer: Renderer,
    *,
    max_length: int | None,
    too_long: TooLong = "truncate",
    where: str = "comparison",
) -> Datum:
    """The datum of `prompt + completion` that trains only the completion (weights not normalised)."""
    model_input, weights_T = render_completion(prompt, completion, renderer, where=where)
    if too_long == "drop" and max_length is not None and model_input.length > max_length:
        raise ExampleTooLongError(f"{where}: {model_input.length} tokens > max_length={max_length}")
    return datum_from_model_input_weights(
        model_input, weights_T, max_length=max_length, reduction="none", where=where
    )


def comparison_to_dpo_datums(
    labeled: LabeledComparison,
    renderer: Renderer,
    *,
    max_length: int | None,
    too_long: TooLong = "truncate",
    where: str = "comparison",
) -> tuple[Datum, Datum]:
    """(chosen datum, rejected datum). A Tie raises `UntrainableExampleError` (it has no chosen side)."""
    chosen, rejected, _ = _pair(labeled, renderer, max_length, too_long, where)
    return chosen, rejected


def _pair(labeled, renderer, max_length, too_long, where) -> tuple[Datum, Datum, bool]:
    """(chosen, rejected, whether a side was longer than max_length and cut)."""
    if labeled.label == "Tie":
        raise UntrainableExampleError(f"{where}: label 'Tie' has no chosen completion for DPO")
    prompt = labeled.comparison.prompt_conversation
    rendered = {
        side: render_completion(prompt, completion, renderer, where=f"{where} ({side})")
        for side, completion in zip(("chosen", "rejected"), labeled.chosen_rejected(), strict=True)
    }
    lengths = [model_input.length for model_input, _ in rendered.values()]
    cut = max_length is not None and max(lengths) > max_length
    if cut and too_long == "drop":
        raise ExampleTooLongError(
            f"{where}: (chosen, rejected) have {lengths} tokens > max_length={max_length}"
        )
    chosen, rejected = (
        datum_from_model_input_weights(
            mi, w, max_length=max_length, reduction="none", where=f"{where} ({side})"
        )
        for side, (mi, w) in rendered.items()
    )
    return chosen, rejected, cut


def check_pairs(datums: Sequence[Datum]) -> None:
    """Refuse what the DPO loss cannot pair: an odd count, no datums, a datum with nothing trained."""
    if not datums:
        raise DPOPairError("DPO got no datums; a batch must hold at least one (chosen, rejected) pair")
    if len(datums) % 2:
        raise DPOPairError(
            f"DPO got {len(datums)} datums, an odd number: pairs are (chosen, rejected) at indices "
            f"(2k, 2k+1), so datum {len(datums) - 1} has no partner"
        )
    for i, d in enumerate(datums):
        side = "chosen" if i % 2 == 0 else "rejected"
        weights = d.loss_fn_inputs.get("weights")
        if weights is None or "target_tokens" not in d.loss_fn_inputs:
            raise DPOPairError(f"DPO datum {i} ({side} of pair {i // 2}) lacks 'weights' or 'target_tokens'")
        if not float(np.sum(weights)) > 0:
            raise DPOPairError(
                f"DPO datum {i} ({side} of pair {i // 2}) has no trained token (weights sum 0)"
            )


class PairConverter:
    """Records -> interleaved pairs, skipping (and counting) what cannot be a pair.

    `counts` (keys `data/...`): `pairs`, `skipped_tie`, `skipped_bad_row`, `skipped_untrainable`,
    `dropped_too_long`, `truncated` (pairs with at least one side cut to `max_length`).
    """

    def __init__(
        self,
        renderer: Renderer,
        *,
        max_length: int | None,
        too_long: TooLong = "truncate",
        on_bad_row: OnBad = "raise",
        on_untrainable: OnBad = "skip",
    ):
        for name, value, allowed in (
            ("too_long", too_long, ("truncate", "drop")),
            ("on_bad_row", on_bad_row, ("raise", "skip")),
            ("on_untrainable", on_untrainable, ("raise", "skip")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.renderer, self.max_length, self.too_long = renderer, max_length, too_long
        self.on_bad_row, self.on_untrainable = on_bad_row, on_untrainable
        self.counts: Counter[str] = Counter()

    def pair(self, where: str, labeled: LabeledComparison) -> tuple[Datum, Datum] | None:
        if labeled.label == "Tie":
            self.counts["data/skipped_tie"] += 1
            return None
        try:
            chosen, rejected, cut = _pair(labeled, self.renderer, self.max_length, self.too_long, where)
        except DataFormatError:
            if self.on_bad_row == "raise":
                raise
            self.counts["data/skipped_bad_row"] += 1
            return None
        except UntrainableExampleError:
            if self.on_untrainable == "raise":
                raise
            self.counts["data/skipped_untrainable"] += 1
            return None
        except ExampleTooLongError:
            self.counts["data/dropped_too_long"] += 1
            return None
        if cut:
            self.counts["data/truncated"] += 1
        self.counts["data/pairs"] += 1
        return chosen, rejected

    def convert(self, records: Sequence[ComparisonRecord]) -> list[Datum]:
        """Interleaved [chosen_0, rejected_0, chosen_1, ...] of the records that make a pair.

        `records` yields `(where, LabeledComparison)`; a lazy source may raise `DataFormatError`
        when a row is read, which `on_bad_row` handles like any other bad row.
        """
        out: list[Datum] = []
        for k in range(len(records)):
            try:
                where, labeled = records[k]
            except DataFormatError:
                if self.on_bad_row == "raise":
                    raise
                self.counts["data/skipped_bad_row"] += 1
                continue
            pair = self.pair(where, labeled)
            if pair is not None:
                out.extend(pair)
        return out


class DPODataset(ConversationDataset):
    """Comparisons shuffled per epoch, cut into batches of `batch_size` pairs (2 x batch_size datums).

    The order of an epoch is a pure function of `(seed, epoch)` (the same `epoch_permutation` the
    SFT datasets use), so `set_epoch(e); get_batch(i)` gives the same datums in any process. Pairs
    are converted when their batch is built; a skipped record (tie, bad row, untrainable) leaves its
    batch one pair short, never odd. The last `len(records) % batch_size` records of an epoch's
    order are left out of that epoch.
    """

    def get_batch(self, i: int) -> list[Datum]:
        """[chosen_0, rejected_0, chosen_1, rejected_1, ...]: at most 2 x batch_size datums."""
        return self.convert.convert(Subset(self.records, self.batch_indices(i)))
