"""What every training workflow shares: the log dir, resume, periodic/final checkpoints, metrics.

    run = TrainingRun(RunOptions(...), config)
    start_step, loop_state = run.resume(client)      # (0, {}) on a fresh log dir
    ...
    run.log(metrics, step)                           # raises TrainingError on a non-finite loss
    run.maybe_save(step, client, loop_state)         # every `save_every` steps, or on SIGTERM
    run.finish(step, client, loop_state)             # final checkpoint, flush, close

A checkpoint at step s holds the state after s optimizer steps and the loop state needed to
take step s next; a rerun with the same log dir restores it, drops metrics rows >= s, and so
never replays an applied batch. While the run is open, SIGTERM / SIGINT make the next
`maybe_save` write a checkpoint and raise `Preempted` (see `preemption.py`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from jaxcook.workflows.options import RunOptions
from jaxcook.workflows.preemption import Preempted, Preemption, resume_line
from jaxcook.workflows.run_storage import open_run_storage

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    pass


class TrainingRun:
    def __init__(self, options: RunOptions, config: Any, *, watched: tuple[str, ...] = ("train/loss",)):
        self.options = options
        self.config = config
        self.storage = open_run_storage(options)  # a local dir, or a staged copy of an s3:// / gs:// one
        self.log_dir = self.storage.log_dir
        self.checkpointer = self.storage.checkpointer
        self.watched = watched
        self.logger = None
        self.history: list[dict] = []
        self.last_saved: int | None = None
        self.preemption = Preemption().install()

    def resume(self, client) -> tuple[int, dict]:
        """Restore the newest readable checkpoint into `client`; start logging at its step."""
        restored = self.checkpointer.restore_latest(client.current_state().result())
        start, loop_state = 0, {}
        if restored is not None:
            start, state, meta = restored
            client.set_state(state).result()
            loop_state = meta.get("loop", {})
            self.last_saved = start
        self._start_logging(start)
        if restored is not None:
            log.info("resumed from %s (step %d)", self.checkpointer.path(start), start)
        return start, loop_state

    def _start_logging(self, start_step: int) -> None:
        from jaxcook.logging import setup_logging

        o = self.options
        self.logger = setup_logging(
            self.log_dir,
            self.config,
            wandb_project=o.wandb_project,
            wandb_name=o.wandb_name,
            start_step=start_step,
            tensorboard=o.tensorboard,
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log one step's metrics; a non-finite watched metric stops the run with a clear error."""
        self.logger.log_metrics(metrics, step)
        self.storage.sync()  # remote log dir: push the new rows (throttled)
        if self.history and self.history[-1]["step"] == step:  # one row per step, as in metrics.jsonl
            self.history[-1].update(metrics)
        else:
            self.history.append({"step": step, **metrics})
        bad = [k for k in self.watched if k in metrics and not math.isfinite(metrics[k])]
        if bad:
            good = self.checkpointer.path(self.last_saved) if self.last_saved is not None else "none"
            raise TrainingError(
                f"non-finite {', '.join(bad)} at step {step}; stopping. Last good checkpoint: {good}"
            )

    def save(self, step: int, client, loop_state: dict, *, final: bool = False) -> Path:
        state = client.current_state(copy=True).result()
        meta = {
            "loop": {**loop_state, "step": step},
            "final": final,
            "config": _jsonable(self.config),
            "renderer_name": loop_state.get("renderer_name"),
        }
        self.checkpointer.save(step, state, meta, force=final)
        self.last_saved = step
        return self.checkpointer.path(step)

    def should_save(self, step: int) -> bool:
        """Whether `maybe_save(step, ...)` will save: a periodic step, or a stop was requested."""
        every = self.options.save_every
        periodic = bool(every) and step > 0 and step % every == 0
        return (periodic and step != self.last_saved) or self.preemption.requested(step)

    def maybe_save(self, step: int, client, loop_state: dict) -> None:
        """Save at periodic steps; after a SIGTERM / SIGINT save, flush and raise `Preempted`."""
        if not self.should_save(step):
            return
        if step != self.last_saved:
            self.save(step, client, loop_state)
        if self.preemption.requested(step):
            self.checkpointer.wait()
            log.warning(resume_line(step))
            raise Preempted(step, str(self.checkpointer.path(step)), self.preemption.signal_name)

    def finish(self, step: int, client, loop_state: dict) -> Path:
        from jaxcook.data.accounting import total_metrics
        from jaxcook.logging import read_metrics

        totals = total_metrics(read_metrics(self.log_dir))  # truncated / skipped over every resume
        if totals:
            self.log(totals, step)
        if self.last_saved == step and self.checkpointer.steps() and step in self.checkpointer.steps():
            path = self.checkpointer.path(step)  # the final state is already saved (e.g. a rerun)
        else:
            path = self.save(step, client, loop_state, final=True)
        self.close()
        return path

    def close(self) -> None:
        self.preemption.uninstall()
        self.checkpointer.close()
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        self.storage.close()


def _jsonable(config: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(config):
        from jaxcook.config import config_to_dict

        return config_to_dict(config)
    return config
