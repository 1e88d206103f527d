"""What a recipe's `main(cfg)` returns: the metrics history, the final checkpoint and the log dir."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The outcome of one run.

    `metrics` is the history this run logged, one flat `{"step": int, "area/name": value, ...}` dict per
    logged step (as in `metrics.jsonl`); `final_checkpoint` is the path of the last checkpoint saved,
    or None when the run saved none; `run_id` is the run's id in the run registry (`python -m
    jaxcook.runs show RUN_ID`), None when the registry is off.
    """

    metrics: list[dict] = field(default_factory=list)
    final_checkpoint: str | None = None
    log_dir: str
    run_id: str | None = None

    @property
    def last_metrics(self) -> dict:
        """The last logged row ({} when nothing was logged)."""
        return self.metrics[-1] if self.metrics else {}
