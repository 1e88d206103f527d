"""Checkpoints of a remote log dir: uploaded after the backend saved them locally, committed by a
marker, listed and fetched back only when committed.

A run with an `s3://` / `gs://` log dir saves each checkpoint through its training client into
the local staging copy of the log dir (`jaxcook.storage`: Orbax cannot write to `s3://`), then
`publish` queues its upload: first the files `before_commit()` returns (metrics and the
checkpoint records as they are now), then every file of the step, then the commit marker; then
steps beyond `keep` are deleted (marker first, so a half-deleted step never looks committed).
A step killed mid-upload has no marker: it is invisible and overwritten later.

`fetch_checkpoint(url)` gives a local copy of a committed checkpoint for what reads checkpoints
from disk (export, chat, sampling): `s3://b/run/checkpoints/40`, or the run `s3://b/run` (its
newest committed step).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from jaxcook.storage import COMMIT_MARKER, RemoteDir, commit_record, staging_dir

log = logging.getLogger(__name__)


class RemoteCheckpointError(RuntimeError):
    pass


class RemoteCheckpoints:
    def __init__(
        self,
        remote: RemoteDir,
        *,
        keep: int = 3,
        prefix: str = "checkpoints",
        before_commit: Callable[[], list[tuple[str, bytes]]] = list,
    ):
        self.remote, self.prefix, self.keep = remote, prefix, keep
        self.before_commit = before_commit

    def url(self, step: int) -> str:
        return self.remote.url_of(f"{self.prefix}/{step}")

    def publish(self, step: int, local: Path) -> None:
        """Queue the upload of the saved folder `local` as step `step` (removed locally once up)."""
        self.remote.submit(self._upload, step, Path(local), self.before_commit())

    def _upload(self, step: int, local: Path, first: list[tuple[str, bytes]]) -> None:
        for rel, data in first:
            self.remote.put_bytes(rel, data)
        rel = f"{self.prefix}/{step}"
        self.remote.remove(rel)  # what a killed upload of this step left
        self.remote.put_tree(local, rel)
        self.remote.put_bytes(f"{rel}/{COMMIT_MARKER}", commit_record(local))
        shutil.rmtree(local, ignore_errors=True)
        log.info("checkpoint %s committed", self.remote.url_of(rel))
        for old in self.committed()[: -self.keep] if self.keep else []:
            self.remote.remove(f"{self.prefix}/{old}/{COMMIT_MARKER}")
            self.remote.remove(f"{self.prefix}/{old}")

    def wait(self) -> None:
        self.remote.wait()

    def committed(self) -> list[int]:
        """The committed steps (uploads still queued are not counted until `wait`)."""
        self.remote.fs.invalidate_cache()
        names = self.remote.files(self.prefix)
        return sorted(
            int(n.split("/")[0]) for n in names if n.split("/")[0].isdigit() and n.endswith(COMMIT_MARKER)
        )

    def fetch(self, step: int, local: Path) -> Path:
        """Download committed step `step` into `local`, checked against its commit marker."""
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
            raise RemoteCheckpointError(
                f"{self.url(step)} does not match its commit marker (missing {missing}, wrong size {wrong})"
            )
        return local


def fetch_checkpoint(url: str) -> Path:
    """A local copy (under `staging_dir`) of the committed checkpoint `url` names: a run's
    `<run>/checkpoints/<step>`, or a run itself (its newest committed step)."""
    head, _, last = url.rstrip("/").rpartition("/")
    if last.isdigit() and head.endswith("/checkpoints"):
        run_url, step = head.removesuffix("/checkpoints"), int(last)
    else:
        run_url, step = url.rstrip("/"), None
    remote = RemoteDir(run_url)
    try:
        checkpoints = RemoteCheckpoints(remote)
        committed = checkpoints.committed()
        if step is None and not committed:
            raise RemoteCheckpointError(f"{url}: no committed checkpoint in {run_url}/checkpoints")
        if step is not None and step not in committed:
            raise RemoteCheckpointError(f"{url}: not a committed checkpoint (committed steps: {committed})")
        step = committed[-1] if step is None else step
        return checkpoints.fetch(step, staging_dir(checkpoints.url(step)))
    finally:
        remote.close()
