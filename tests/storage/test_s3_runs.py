"""Runs whose log dir is `s3://`: save, list, resume, metrics, against a real S3-protocol server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxcook.storage import COMMIT_MARKER, is_remote, local_path, staging_dir

ROOT = Path(__file__).resolve().parents[2]


def test_paths_urls_are_never_mangled():
    assert is_remote("s3://b/run") and is_remote("gs://b/run") and not is_remote("runs/x")
    assert not is_remote("file:///tmp/x") and local_path("file:///tmp/x") == Path("/tmp/x")
    with pytest.raises(ValueError, match="remote URL"):
        local_path("s3://b/run")


def remote_metrics(s3, prefix):
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"{prefix}/metrics.jsonl")["Body"].read()
    return [json.loads(line) for line in body.decode().splitlines()]


def committed(s3, prefix):
    keys = s3.keys(s3.bucket, f"{prefix}/checkpoints/")
    return sorted(int(k.split("/")[-2]) for k in keys if k.endswith(COMMIT_MARKER))


def test_a_run_saves_to_s3_and_a_rerun_resumes_from_it(s3, tmp_path, caplog):
    import jaxcook

    url = f"s3://{s3.bucket}/sft"
    first = jaxcook.run("sft", tiny=True, **{"run.log_dir": url, "run.save_every": 2})
    assert first.final_checkpoint == f"{url}/checkpoints/4"
    assert committed(s3, "sft") == [2, 4]
    keys = s3.keys(s3.bucket, "sft/")
    assert {"sft/metrics.jsonl", "sft/config.json", "sft/logs.log"} <= set(keys)
    assert any(k.startswith("sft/checkpoints/4/state/") for k in keys), [
        k for k in sorted(keys) if "/4/" in k
    ]
    rows = remote_metrics(s3, "sft")
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert {r["step"] for r in rows if "train/loss" in r} == {0, 1, 2, 3}
    assert first.log_dir == str(staging_dir(url)) and str(tmp_path) in first.log_dir  # the local copy

    # More steps in the same log dir: it resumes from s3://.../checkpoints/4, trains 4 and 5.
    second = jaxcook.run("sft", tiny=True, **{"run.log_dir": url, "run.save_every": 2, "max_steps": 6})
    assert second.final_checkpoint == f"{url}/checkpoints/6"
    assert [r["step"] for r in second.metrics if "train/loss" in r] == [4, 5]
    rows = remote_metrics(s3, "sft")
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert {r["step"] for r in rows if "train/loss" in r} == set(range(6))
    assert committed(s3, "sft") == [2, 4, 6]
    log_text = s3.client().get_object(Bucket=s3.bucket, Key="sft/logs.log")["Body"].read().decode()
    assert f"resumed from {url}/checkpoints/4 (step 4)" in log_text

    # A committed step that lost an object (bucket lifecycle, a bad copy): it does not match its
    # commit marker, so the rerun falls back to the previous step.
    lost = next(k for k in s3.keys(s3.bucket, "sft/checkpoints/6/state/") if not k.endswith("/"))
    s3.client().delete_object(Bucket=s3.bucket, Key=lost)
    third = jaxcook.run("sft", tiny=True, **{"run.log_dir": url, "run.save_every": 2, "max_steps": 7})
    assert [r["step"] for r in third.metrics if "train/loss" in r] == [4, 5, 6]
    # (restore runs before the run's log file is open: the warning is on stderr)
    assert "checkpoints/6 is unreadable" in caplog.text
    assert "does not match its commit marker" in caplog.text
    rows = remote_metrics(s3, "sft")
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})


def test_if_log_dir_exists_raise_and_delete_apply_to_a_bucket(s3):
    from jaxcook.workflows.options import RunOptions
    from jaxcook.workflows.run_storage import open_run_storage

    url = f"s3://{s3.bucket}/other"
    s3.client().put_object(Bucket=s3.bucket, Key="other/notes.txt", Body=b"not a run")
    with pytest.raises(FileExistsError, match="already holds files"):
        open_run_storage(RunOptions(log_dir=url, if_log_dir_exists="raise"))
    with pytest.raises(FileExistsError, match="does not look like a jaxcook run"):
        open_run_storage(RunOptions(log_dir=url, if_log_dir_exists="delete"))
    s3.client().put_object(Bucket=s3.bucket, Key="other/metrics.jsonl", Body=b"")
    storage = open_run_storage(RunOptions(log_dir=url, if_log_dir_exists="delete"))
    storage.close()
    assert s3.keys(s3.bucket, "other/") == []


ARGS = ["num_epochs=2", "max_steps=12", "run.save_every=3", "eval_every=4", "optim.learning_rate=3e-3"]


def command(log_dir):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--recipe", "sft", "--tiny"] + [
        f"run.log_dir={log_dir}",
        *ARGS,
    ]


def local_final_params(log_dir: Path):
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        return ckptr.restore(log_dir / "checkpoints" / "12", args=args)["state"]["params"]


def s3_params(s3, prefix, step, dest: Path):
    for key in s3.keys(s3.bucket, f"{prefix}/checkpoints/{step}/"):
        target = dest / key.split(f"checkpoints/{step}/", 1)[1]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.client().download_file(s3.bucket, key, str(target))
    (dest / COMMIT_MARKER).unlink()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        return ckptr.restore(dest, args=args)["state"]["params"]


@pytest.mark.slow
def test_sigkill_mid_upload_then_rerun_resumes_from_the_last_complete_checkpoint(s3, tmp_path):
    env = {**os.environ, **s3.env, "PYTHONUNBUFFERED": "1"}
    url = f"s3://{s3.bucket}/killed"
    straight = tmp_path / "straight"
    subprocess.run(command(straight), check=True, env=env, capture_output=True)

    s3.hold, s3.hold_after = "/killed/checkpoints/6/", 1  # checkpoint 6: one file stored, then stuck
    proc = subprocess.Popen(command(url), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert s3.held.wait(300), "the run never uploaded checkpoint 6"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        s3.hold = None
        s3.release.set()  # the held PUT completes: a partial step 6, as a real kill leaves it
    time.sleep(0.5)
    assert committed(s3, "killed") == [3]
    assert any(k.startswith("killed/checkpoints/6/") for k in s3.keys(s3.bucket, "killed/"))

    rerun = subprocess.run(command(url), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {url}/checkpoints/3 (step 3)" in rerun.stderr

    assert committed(s3, "killed") == [6, 9, 12]  # keep_checkpoints=3; 6 re-uploaded whole
    rows = remote_metrics(s3, "killed")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"a step lost or twice: {steps}"
    local_rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert steps == [r["step"] for r in local_rows]
    for a, b in zip(rows, local_rows, strict=True):
        if "train/loss" in a:
            np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-5)
    params_remote = s3_params(s3, "killed", 12, tmp_path / "restored")
    for x, y in zip(
        jax.tree.leaves(params_remote), jax.tree.leaves(local_final_params(straight)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=0)
