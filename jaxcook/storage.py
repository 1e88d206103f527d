"""Where a run's files live: a local folder, or an object store (`s3://`, `gs://`) through fsspec.

A local `log_dir` is used as it is. A remote one (any `scheme://` URL fsspec knows: `s3://`
needs `s3fs`, `gs://` needs `gcsfs`) is *mirrored*: the run writes into a local staging folder
exactly as it would into a local log dir (metrics.jsonl, logs.log, TensorBoard, reports,
Orbax checkpoints), and `RemoteDir` copies it up. Why not Orbax straight to the bucket: orbax
0.12.8 builds TensorStore specs only for local paths and `gs://` (an `s3://` path fails with
"Checkpoint path should be absolute"), and an object store has no atomic rename, so a
checkpoint needs an explicit commit anyway.

Consistency rules (what makes a SIGKILL at any moment safe):
- Every remote write is a whole-object PUT of a file's current bytes, done by one background
  worker in submission order, so an object is always some complete earlier version.
- A checkpoint `<step>/` is uploaded file by file, and only then its commit marker
  (`COMMIT_MARKER`: the file list and sizes). A step without the marker is not a checkpoint:
  listing skips it, a new upload of that step first deletes it.
- Before a checkpoint's files, the metrics file is uploaded as it is at save time, so every
  committed checkpoint has the rows of every step before it (a resume drops the later ones).

Credentials and endpoints come from the environment as fsspec / boto read them
(`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

COMMIT_MARKER = "JAXCOOK_COMMIT.json"


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URL of a remote filesystem (`s3://b/k`, `gs://b/k`), not a local path."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def local_path(path: str | os.PathLike) -> Path:
    """A local path, absolute, `~` expanded (never call this on a URL: `Path` mangles `s3://`)."""
    if is_remote(path):
        raise ValueError(f"{path} is a remote URL, not a local path")
    text = str(path).removeprefix("file://")
    return Path(text).expanduser().absolute()


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base/part/...` for a local path or a URL alike (`Path` would turn `s3://b` into `s3:/b`)."""
    if not is_remote(base):
        return str(Path(base).joinpath(*parts))
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


def staging_dir(url: str) -> Path:
    """The local folder a remote log dir is staged in: `$JAXCOOK_STAGING/<hash of the URL>`
    (default `$JAXCOOK_CACHE/staging`). Put it on a local disk with room for two checkpoints."""
    from jaxcook.assets import cache_dir

    root = (
        Path(os.environ["JAXCOOK_STAGING"]) if os.environ.get("JAXCOOK_STAGING") else cache_dir() / "staging"
    )
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(root) / digest


class RemoteDir:
    """A remote folder (URL) and a worker that uploads to it in order."""

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxcook-upload")
        self._pending: list[Future] = []

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def exists(self, rel: str = "") -> bool:
        self.fs.invalidate_cache()  # listings are cached; another process may have written since
        return self.fs.exists(self._key(rel))

    def is_empty(self) -> bool:
        return not self.exists() or not self.fs.find(self.root)

    def files(self, rel: str = "") -> dict[str, int]:
        """{relative path: size} of every object under `rel`."""
        base = self._key(rel).rstrip("/") + "/"
        found = self.fs.find(base, detail=True) if self.exists(rel) else {}
        return {k[len(base) :]: int(v.get("size") or 0) for k, v in found.items()}

    def remove(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.rm(self._key(rel), recursive=True)
            self.fs.invalidate_cache()

    def download(self, rel: str, dest: Path, *, exclude: tuple[str, ...] = ()) -> list[str]:
        """Copy every object under `rel` into `dest` (made); return the relative paths copied."""
        copied = []
        for name in sorted(self.files(rel)):
            if name.split("/")[0] in exclude:
                continue
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._key(f"{rel}/{name}" if rel else name), str(target))
            copied.append(name)
        return copied

    def get_file(self, rel: str, dest: Path) -> None:
        self.fs.get_file(self._key(rel), str(dest))

    def read_bytes(self, rel: str) -> bytes | None:
        return self.fs.cat_file(self._key(rel)) if self.exists(rel) else None

    # Uploads: queued, done in order by the worker; `wait` blocks until all are done.

    def submit(self, job, *args) -> Future:
        future = self._worker.submit(job, *args)
        self._pending.append(future)
        return future

    def put_bytes(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._key(rel), data)

    def put_tree(self, local: Path, rel: str, *, skip: tuple[str, ...] = ()) -> None:
        """Upload every file under `local` to `rel/` (a whole-object PUT each)."""
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            name = path.relative_to(local).as_posix()
            if name.split("/")[0] not in skip:
                self.fs.put_file(str(path), self._key(f"{rel}/{name}" if rel else name))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # an upload error surfaces here, in the training thread

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._worker.shutdown(wait=True)


def reset_staging(path: Path) -> Path:
    """An empty staging folder at `path` (what a previous process left there is not trusted)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def commit_record(local_step_dir: Path) -> bytes:
    """The commit marker of a checkpoint folder: every file and its size, as JSON."""
    files = {
        p.relative_to(local_step_dir).as_posix(): p.stat().st_size
        for p in sorted(local_step_dir.rglob("*"))
        if p.is_file()
    }
    return json.dumps({"files": files}, indent=1).encode()
