"""Checkpoints in an object store: written locally by Orbax, uploaded, committed by a marker.

`RemoteCheckpointer` has the interface of `Checkpointer` (save / wait / steps / path /
restore_latest / close) for a `checkpoints/` folder at a remote URL (see `jaxcook.storage` for
why Orbax does not write there itself). A save writes `<staging>/<step>` synchronously with
Orbax, then queues its upload: first the files `before_commit()` returns (the metrics as they
are now), then every file of the step, then the commit marker; then older steps beyond `keep`
are deleted (marker first, so a half-deleted step never looks committed). Only committed
steps are listed and restored; a step killed mid-upload is invisible and overwritten later.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxcook.engine import checkpoint
from jaxcook.engine.train_step import TrainState
from jaxcook.storage import COMMIT_MARKER, RemoteDir, commit_record

log = logging.getLogger(__name__)


class RemoteCheckpointer:
    def __init__(
        self,
        remote: RemoteDir,
        staging: Path,
        *,
        keep: int = 3,
        prefix: str = "checkpoints",
        before_commit: Callable[[], list[tuple[str, bytes]]] = list,
    ):
        self.remote, self.prefix, self.keep = remote, prefix, keep
        self.staging = staging / prefix
        self.directory = remote.url_of(prefix)
        self.before_commit = before_commit

    def save(
        self,
        step: int,
        state: TrainState,
        meta: dict[str, Any],
        *,
        with_optimizer: bool = True,
        force: bool = False,
    ) -> None:
        local = self.staging / str(step)
        if local.exists():
            shutil.rmtree(local)
        checkpoint.save(local, state, meta, with_optimizer=with_optimizer)
        self.remote.submit(self._upload, step, local, self.before_commit())

    def _upload(self, step: int, local: Path, first: list[tuple[str, bytes]]) -> None:
        for rel, data in first:
            self.remote.put_bytes(rel, data)
        rel = f"{self.prefix}/{step}"
        self.remote.remove(rel)  # what a killed upload of this step left
        self.remote.put_tree(local, rel)
        self.remote.put_bytes(f"{rel}/{COMMIT_MARKER}", commit_record(local))
        shutil.rmtree(local)
        log.info("checkpoint %s committed", self.remote.url_of(rel))
        for old in self.steps()[: -self.keep] if self.keep else []:
            self.remote.remove(f"{self.prefix}/{old}/{COMMIT_MARKER}")
            self.remote.remove(f"{self.prefix}/{old}")

    def wait(self) -> None:
        self.remote.wait()

    def steps(self) -> list[int]:
        """The committed steps (uploads still queued are not counted until `wait`)."""
        self.remote.fs.invalidate_cache()
        names = self.remote.files(self.prefix)
        return sorted(
            int(n.split("/")[0]) for n in names if n.split("/")[0].isdigit() and n.endswith(COMMIT_MARKER)
        )

    def path(self, step: int) -> str:
        return f"{self.directory}/{step}"

    def restore_latest(self, template: TrainState) -> tuple[int, TrainState, dict] | None:
        """(step, state, meta) of the newest committed, readable checkpoint, or None if none."""
        self.wait()
        steps = self.steps()
        for step in reversed(steps):
            local = self.staging / f"restore-{step}"
            try:
                self._download(step, local)
                return (step, *checkpoint.restore(local, template))
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint falls back
                log.warning(
                    "checkpoint %s is unreadable (%s: %s); falling back to the previous one",
                    self.path(step),
                    type(e).__name__,
                    e,
                )
            finally:
                shutil.rmtree(local, ignore_errors=True)
        if steps:
            raise checkpoint.CheckpointError(f"no readable checkpoint in {self.directory} (tried {steps})")
        return None

    def _download(self, step: int, local: Path) -> None:
        rel = f"{self.prefix}/{step}"
        if local.exists():
            shutil.rmtree(local)
        expected = json.loads(self.remote.read_bytes(f"{rel}/{COMMIT_MARKER}"))["files"]
        self.remote.download(rel, local)
        (local / COMMIT_MARKER).unlink()
        got = {p.relative_to(local).as_posix(): p.stat().st_size for p in local.rglob("*") if p.is_file()}
        if got != expected:
            missing = sorted(set(expected) - set(got))
            wrong = sorted(k for k in expected if k in got and got[k] != expected[k])
            raise checkpoint.CheckpointError(
                f"{self.path(step)} does not match its commit marker (missing {missing}, wrong size {wrong})"
            )

    def close(self) -> None:
        self.wait()
