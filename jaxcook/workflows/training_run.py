"""What every training workflow shares: the log dir, resume, periodic/final checkpoints, metrics.

    run = TrainingRun(RunOptions(...), config)
    start_step, loop_state = run.resume(client)      # (0, {}) on a fresh log dir
    ...
    run.log(metrics, step)                           # raises TrainingError on a non-finite loss
    run.maybe_save(step, client, loop_state)         # every `save_every` steps, or on SIGTERM
    run.finish(step, client, loop_state)             # final checkpoint, flush, close

Checkpoints go through the port, as tinker-cookbook records them: `client.save_state(name)`
saves the state (the local backend writes `<log_dir>/checkpoints/<step>`), and a line of
`<log_dir>/checkpoints.jsonl` records `{"name", "step", "state_path", "loop", "final"}` once the
save is done. A checkpoint at step s holds the state after s optimizer steps and the loop state
needed to take step s next; a rerun with the same log dir loads the newest one that loads
(`load_state_with_optimizer`; an unreadable one is skipped with a warning), drops metrics rows
>= s, and so never replays an applied batch. Only the newest `keep_checkpoints` local folders
are kept.

While the run is open, SIGTERM / SIGINT make the next `maybe_save` write a checkpoint and raise
`Preempted` (see `preemption.py`). A remote log dir (`s3://`, `gs://`) is written in a local
staging copy (`run_storage.py`): each checkpoint the backend saved there is uploaded and
committed (`jaxcook.remote_checkpoints`), and a resume fetches the newest committed one.

While the run is open, every timing span (`jaxcook.logging.trace`) goes to `<log_dir>/trace.json`
(a Chrome / Perfetto trace), written when the run closes (a resumed run writes its own).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import threading
from pathlib import Path
from typing import Any

from jaxcook.logging import trace
from jaxcook.workflows.options import RunOptions
from jaxcook.workflows.preemption import Preempted, Preemption, resume_line
from jaxcook.workflows.run_storage import open_run_storage

log = logging.getLogger(__name__)

RECORDS = "checkpoints.jsonl"
TRACE_FILE = "trace.json"


class TrainingError(RuntimeError):
    pass


class CheckpointError(RuntimeError):
    pass


def read_records(log_dir: str | Path) -> list[dict]:
    """The checkpoints of the runs in `log_dir`, oldest first: those `checkpoints.jsonl` records
    (the last record of a step wins; a torn line, e.g. from a kill mid-write, is skipped), and
    complete local folders `checkpoints/<step>` it does not record (written by a run killed
    before it recorded them, or by an older jaxcook): their loop state is in their meta."""
    log_dir = Path(log_dir)
    by_step: dict[int, dict] = {}
    folders = log_dir / "checkpoints"
    if folders.is_dir():
        for p in folders.iterdir():
            if p.name.isdigit() and p.is_dir():
                by_step[int(p.name)] = {"name": p.name, "step": int(p.name), "state_path": str(p)}
    if (log_dir / RECORDS).exists():
        for line in (log_dir / RECORDS).read_text().splitlines():
            try:
                record = json.loads(line)
                by_step[int(record["step"])] = {**record, "step": int(record["step"])}
                str(record["state_path"])
            except (ValueError, KeyError, TypeError):
                continue
    return [by_step[s] for s in sorted(by_step)]


def final_checkpoint(log_dir: str | Path) -> dict | None:
    """The record of the final checkpoint of a finished run in `log_dir`, else None."""
    records = read_records(log_dir)
    return records[-1] if records and records[-1].get("final") else None


class TrainingRun:
    def __init__(self, options: RunOptions, config: Any, *, watched: tuple[str, ...] = ("train/loss",)):
        self.options = options
        self.config = config
        self.storage = open_run_storage(options)  # a local dir, or a staged copy of an s3:// / gs:// one
        self.log_dir = self.storage.log_dir
        self.remote = self.storage.checkpoints  # None for a local log dir
        self.checkpoint_dir = self.log_dir / "checkpoints"
        self.watched = watched
        self.logger = None
        self.history: list[dict] = []
        self.last_saved: int | None = None
        self.resumed_from: int | None = None
        self._saved: dict[int, str] = {r["step"]: r["state_path"] for r in read_records(self.log_dir)}
        self._pending: list = []  # save futures not yet recorded
        self._lock = threading.Lock()
        self.preemption = Preemption().install()
        self._spans = contextlib.ExitStack()  # the run's timing spans -> log_dir/trace.json on close
        self._spans.enter_context(trace.tracing(self.log_dir / TRACE_FILE))

    def checkpoint_path(self, step: int) -> str:
        """Where the checkpoint of `step` is (or goes, on the local backend; its URL when remote)."""
        if self.remote is not None:
            return self.remote.url(step)
        return self._saved.get(step, str(self.checkpoint_dir / str(step)))

    def _candidates(self) -> list[dict]:
        """Checkpoints to resume from, oldest first. Remote: the committed steps, with the loop
        state their records hold (a record whose upload never committed is not a candidate)."""
        records = {r["step"]: r for r in read_records(self.log_dir)}
        if self.remote is None:
            return [records[s] for s in sorted(records)]
        local = {s: str(self.checkpoint_dir / str(s)) for s in self.remote.committed()}
        return [{**records.get(s, {}), "step": s, "state_path": p, "fetch": True} for s, p in local.items()]

    def saved_steps(self) -> list[int]:
        """Steps with a recorded (completed) checkpoint, this run's and earlier runs' in this dir."""
        with self._lock:
            return sorted(self._saved)

    def resume(self, client) -> tuple[int, dict]:
        """Load the newest loadable checkpoint into `client`; start logging at its step."""
        start, loop_state = 0, {}
        records = self._candidates()
        for record in reversed(records):
            try:
                if record.get("fetch"):
                    self.remote.fetch(record["step"], Path(record["state_path"]))
                meta = client.load_state_with_optimizer(record["state_path"]).result() or {}
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                log.warning(
                    "checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                    self.checkpoint_path(record["step"]) if record.get("fetch") else record["state_path"],
                    type(e).__name__,
                    e,
                )
                continue
            start = int(record["step"])
            loop_state = record.get("loop") or meta.get("loop") or {}
            self.last_saved = self.resumed_from = start
            break
        else:
            if records:
                tried = [r["state_path"] for r in records]
                where = self.log_dir / RECORDS if self.remote is None else self.storage.location
                raise CheckpointError(f"no readable checkpoint in {where} (tried {tried})")
        self._start_logging(start)
        if self.resumed_from is not None:
            log.info("resumed from %s (step %d)", self.checkpoint_path(start), start)
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
            good = self.checkpoint_path(self.last_saved) if self.last_saved is not None else "none"
            raise TrainingError(
                f"non-finite {', '.join(bad)} at step {step}; stopping. Last good checkpoint: {good}"
            )

    def save(self, step: int, client, loop_state: dict, *, final: bool = False):
        """Submit the save of the state after `step` optimizer steps; it is recorded when done."""
        loop = {**loop_state, "step": step}
        meta = {
            "loop": loop,
            "final": final,
            "config": _jsonable(self.config),
            "renderer_name": loop_state.get("renderer_name"),
        }
        future = client.save_state(str(self.checkpoint_dir / str(step)), user_metadata=meta)
        record = {"name": str(step), "step": step, "loop": loop, "final": final}
        future.add_done_callback(lambda f: self._record(f, record))
        self._pending.append(future)
        self.last_saved = step
        return future

    def _record(self, future, record: dict) -> None:
        if future.exception() is not None:
            log.error("saving checkpoint %s failed: %s", record["name"], future.exception())
            return
        self._write_record({**record, "state_path": future.result().path})

    def _write_record(self, record: dict, *, saved_now: bool = True) -> None:
        with self._lock:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(self.log_dir / RECORDS, "a") as f:
                f.write(json.dumps(record) + "\n")
            self._saved[record["step"]] = record["state_path"]
            if self.remote is not None and saved_now:  # upload, commit; the remote keeps `keep`
                self.remote.publish(record["step"], Path(record["state_path"]))
            else:
                self._prune()

    def _prune(self) -> None:
        """Delete local checkpoint folders beyond the newest `keep_checkpoints` (under the lock)."""
        keep = self.options.keep_checkpoints
        if keep <= 0:
            return
        for step in sorted(self._saved)[:-keep]:
            path = Path(self._saved[step])
            if "://" not in self._saved[step] and path.parent == self.checkpoint_dir:
                shutil.rmtree(path, ignore_errors=True)
                del self._saved[step]

    def wait(self) -> None:
        """Block until every submitted save is written and recorded (raising a failed save's
        error), and a remote run's uploads are committed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()
        if self.remote is not None:
            self.remote.wait()

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
            self.wait()
            log.warning(resume_line(step))
            raise Preempted(step, self.checkpoint_path(step), self.preemption.signal_name)

    def finish(self, step: int, client, loop_state: dict) -> str:
        """The final checkpoint (saved now, or already saved at `step`: then recorded as final)."""
        from jaxcook.data.accounting import total_metrics
        from jaxcook.logging import read_metrics

        totals = total_metrics(read_metrics(self.log_dir))  # truncated / skipped over every resume
        if totals:
            self.log(totals, step)
        self.wait()
        if self.last_saved != step or step not in self.saved_steps():
            self.save(step, client, loop_state, final=True)
            self.wait()
        elif not (final_checkpoint(self.log_dir) or {}).get("step") == step:
            loop = {**loop_state, "step": step}
            path = self.checkpoint_path(step)
            record = {"name": str(step), "step": step, "loop": loop, "final": True, "state_path": path}
            self._write_record(record, saved_now=False)  # marks it final; already uploaded
        path = self.checkpoint_path(step)
        self.close()
        return path

    def close(self) -> None:
        self.preemption.uninstall()
        try:
            self.wait()
        finally:
            if self.logger is not None:
                self.logger.close()
                self.logger = None
            self._spans.close()  # before the storage closes: a remote log dir gets the trace too
            self.storage.close()


def _jsonable(config: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(config):
        from jaxcook.config import config_to_dict

        return config_to_dict(config)
    return config
