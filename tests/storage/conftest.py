"""The `s3` fixture: a real S3-protocol server (moto) on 127.0.0.1, the environment pointing at it."""

from __future__ import annotations

import uuid

import pytest

from tests.storage.s3_server import S3Server


@pytest.fixture
def s3(monkeypatch, tmp_path):
    import s3fs

    monkeypatch.setenv("JAXCOOK_STAGING", str(tmp_path / "staging"))  # runs (and subprocesses) stage here
    server = S3Server().start()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem would point at an older server
    server.bucket = f"runs-{uuid.uuid4().hex[:8]}"
    server.client().create_bucket(Bucket=server.bucket)
    yield server
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()
