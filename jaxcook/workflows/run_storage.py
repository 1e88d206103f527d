"""A run's log dir on local disk or in an object store: the folder to write in, and its uploads.

    storage = open_run_storage(options)   # applies options.if_log_dir_exists
    storage.log_dir                       # a local folder: the log dir, or its staging copy
    storage.checkpoints                   # None, or RemoteCheckpoints for a URL
    storage.sync()                        # remote: push changed files (at most every SYNC_EVERY_S)
    storage.close()                       # remote: push everything, wait for the uploads

For a remote `log_dir` (`s3://bucket/run`, `gs://...`; see `jaxcook.storage`) the run writes
into a fresh local staging folder, filled first with the remote run's files when resuming
(metrics.jsonl, logs.log, TensorBoard events; checkpoints are downloaded only to restore).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from jaxcook.remote_checkpoints import RemoteCheckpoints
from jaxcook.storage import RemoteDir, is_remote, join, local_path, reset_staging, staging_dir

log = logging.getLogger(__name__)

SYNC_EVERY_S = 30.0
_RUN_MARKERS = ("metrics.jsonl", "logs.log")  # what makes a remote folder one "delete" may remove


@dataclass
class RunStorage:
    location: str  # the log dir as the user gave it (a path or a URL)
    log_dir: Path
    remote: RemoteDir | None = None
    checkpoints: RemoteCheckpoints | None = None
    _pushed: dict[str, tuple[int, int]] = field(default_factory=dict)  # rel -> (size, mtime_ns)
    _last_sync: float = 0.0
    _closed: bool = False

    def changed_files(self) -> list[tuple[str, bytes]]:
        """(relative path, bytes) of every staged file outside checkpoints/ changed since last taken."""
        out = []
        for path in sorted(p for p in self.log_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(self.log_dir).as_posix()
            if rel.split("/")[0] == "checkpoints" or rel.endswith(".tmp"):
                continue
            stat = path.stat()
            if self._pushed.get(rel) != (stat.st_size, stat.st_mtime_ns):
                self._pushed[rel] = (stat.st_size, stat.st_mtime_ns)
                out.append((rel, path.read_bytes()))
        return out

    def sync(self, *, force: bool = False) -> None:
        if self.remote is None or (not force and time.monotonic() - self._last_sync < SYNC_EVERY_S):
            return
        self._last_sync = time.monotonic()
        changed = self.changed_files()
        if changed:
            self.remote.submit(_put_all, self.remote, changed)

    def close(self) -> None:
        if self.remote is not None and not self._closed:
            self._closed = True
            self.sync(force=True)
            self.remote.close()


def _put_all(remote: RemoteDir, files: list[tuple[str, bytes]]) -> None:
    for rel, data in files:
        remote.put_bytes(rel, data)


def apply_log_dir_policy(log_dir: str, behavior: str) -> None:
    """`if_log_dir_exists` applied now, to a local folder or a URL (for a recipe that writes into its
    log dir before the run opens it: a teacher, teacher answers)."""
    from jaxcook.logging import check_log_dir

    if not is_remote(log_dir):
        check_log_dir(local_path(log_dir), behavior)
        return
    remote = RemoteDir(log_dir)
    try:
        _check_remote(remote, behavior)
    finally:
        remote.close()


class PreRunFiles:
    """Files a recipe keeps in its log dir but writes before the run opens it (teacher answers).

    A local log dir holds them as they are. For a URL they live in a local folder of their own
    (`staging_dir(<url>/pre_run)`, which the run's staging never resets): `fetch` downloads one
    the remote log dir has, `write` writes it locally and uploads it at once, so a rerun finds it.
    """

    def __init__(self, log_dir: str):
        self.remote = RemoteDir(log_dir) if is_remote(log_dir) else None
        if self.remote is None:
            self.dir = local_path(log_dir)
        else:
            self.dir = reset_staging(staging_dir(join(log_dir, "pre_run")))
        self.dir.mkdir(parents=True, exist_ok=True)

    def fetch(self, name: str) -> Path:
        """The local path of `name` (downloaded when only the remote log dir has it; may not exist)."""
        path = self.dir / name
        if self.remote is not None and not path.exists() and self.remote.exists(name):
            self.remote.get_file(name, path)
        return path

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        if self.remote is not None:
            self.remote.put_bytes(name, data)
        return path

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


def open_run_storage(options) -> RunStorage:
    from jaxcook.logging import check_log_dir

    if not is_remote(options.log_dir):
        log_dir = local_path(options.log_dir)
        check_log_dir(log_dir, options.if_log_dir_exists)
        return RunStorage(str(log_dir), log_dir)
    remote = RemoteDir(options.log_dir)
    _check_remote(remote, options.if_log_dir_exists)
    staged = reset_staging(staging_dir(remote.url))
    pulled = remote.download("", staged, exclude=("checkpoints",))
    if pulled:
        log.info("log dir %s exists; resuming in it (staged in %s)", remote.url, staged)
    storage = RunStorage(remote.url, staged, remote)
    storage.changed_files()  # what was pulled is on the remote already
    storage.checkpoints = RemoteCheckpoints(
        remote, keep=options.keep_checkpoints, before_commit=storage.changed_files
    )
    return storage


def _check_remote(remote: RemoteDir, behavior: str) -> None:
    if behavior not in ("resume", "delete", "raise"):
        raise ValueError(f"log dir behavior must be 'resume', 'delete' or 'raise', got {behavior!r}")
    if remote.is_empty():
        return
    if behavior == "raise":
        raise FileExistsError(
            f"log dir {remote.url} already holds files; pass if_log_dir_exists='resume' to continue "
            "that run, 'delete' to start over, or choose another log_dir"
        )
    if behavior == "delete":
        if not any(remote.exists(m) for m in _RUN_MARKERS):
            raise FileExistsError(
                f"log dir {remote.url} is not empty and does not look like a jaxcook run "
                f"(no {' or '.join(_RUN_MARKERS)}); not deleting it"
            )
        log.info("deleting existing log dir %s", remote.url)
        remote.remove("")
