"""What the data policy did, per step and per run: truncated, skipped and dropped examples.

A dataset's `stats()` are counters since it was created (`data/truncated`,
`data/skipped_untrainable`, ...; see `DatumConverter` and the preference converters). Records
are converted when their batch is built, so the counters that move while batch i is built are
that batch's: `batch_with_counts` returns them beside the batch, and the workflow logs them in
the step's metrics row. A batch is the same in every process and on every resume, so these
per-step numbers are too, and a run's total is the sum over the steps of `metrics.jsonl`, which
`run_totals` computes (an example seen in two epochs counts twice: once per use).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

log = logging.getLogger(__name__)

# Counters of examples changed or left out by the data policy; the other `data/*` stats
# (`data/datums`, `data/pairs`, record counts) say what was kept and are not summed.
POLICY_KEYS = (
    "data/truncated",
    "data/truncated_trained_tokens",
    "data/skipped_untrainable",
    "data/skipped_truncated_away",
    "data/skipped_bad_record",
    "data/skipped_bad_row",
    "data/skipped_tie",
    "data/dropped_too_long",
)


def batch_with_counts(dataset, i: int) -> tuple[list, dict[str, float]]:
    """(batch i of `dataset`, the policy counters it moved: every `POLICY_KEYS` entry, 0 if none)."""
    before = dict(dataset.stats())
    batch = dataset.get_batch(i)
    after = dataset.stats()
    return batch, {k: float(after.get(k, 0) - before.get(k, 0)) for k in POLICY_KEYS}


def run_totals(rows: Iterable[Mapping]) -> dict[str, float]:
    """Sum of each policy counter over metrics rows (the whole run: every resumed part)."""
    totals = dict.fromkeys(POLICY_KEYS, 0.0)
    for row in rows:
        for k in POLICY_KEYS:
            value = row.get(k)
            if isinstance(value, int | float):
                totals[k] += value
    return totals


def summary_line(totals: Mapping[str, float]) -> str | None:
    """One log line of the non-zero totals, or None when the policy changed nothing."""
    parts = [f"{k.removeprefix('data/')}={int(v)}" for k, v in totals.items() if v]
    return f"data policy over the run: {', '.join(parts)}" if parts else None


def total_metrics(rows: Iterable[Mapping]) -> dict[str, float]:
    """`data_total/<counter>` of a run's metrics rows, logged (with a summary line) at its end;
    {} for a run whose steps carry no policy counters (RL)."""
    rows = list(rows)
    if not any(k in row for row in rows for k in POLICY_KEYS):
        return {}
    totals = run_totals(rows)
    line = summary_line(totals)
    if line:
        log.warning(line)
    return {f"data_total/{k.removeprefix('data/')}": v for k, v in totals.items()}
