"""A run with an `s3://` log dir: the run registry records it (a rerun as the same run), its trace
and eval reports reach the bucket, and `scripts/export.py` exports it straight from the URL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import jaxcook
from jaxcook.recipes.distill import Config as DistillConfig
from jaxcook.recipes.distill import teacher_log_dir
from jaxcook.runs import RunRegistry
from jaxcook.storage import join
from jaxcook.workflows.options import RunOptions

ROOT = Path(__file__).resolve().parents[2]


def test_url_log_dirs_are_joined_not_mangled(tmp_path):
    assert join("s3://b/run/", "teacher_sft") == "s3://b/run/teacher_sft"
    assert join(str(tmp_path), "teacher_sft") == str(tmp_path / "teacher_sft")
    cfg = DistillConfig(run=RunOptions(log_dir="s3://b/distill"))
    assert teacher_log_dir(cfg) == "s3://b/distill/teacher_sft"


@pytest.mark.slow  # ~105 s on a loaded 2-core CPU: two tiny runs and an export subprocess
def test_an_s3_run_is_registered_resumed_as_itself_and_exported_from_its_url(s3, tmp_path):
    url = f"s3://{s3.bucket}/sft"
    overrides = {"run.log_dir": url, "run.save_every": 1, "max_steps": 2, "eval_every": 0}
    result = jaxcook.run("sft", tiny=True, **overrides)
    assert result.final_checkpoint == f"{url}/checkpoints/2"
    with RunRegistry.open() as reg:
        (run,) = reg.runs()
        checkpoints = reg.checkpoints(run["id"])
    assert run["status"] == "finished" and run["log_dir"] == url
    assert [(c["step"], c["final"], c["path"]) for c in checkpoints] == [
        (1, 0, f"{url}/checkpoints/1"),
        (2, 1, f"{url}/checkpoints/2"),
    ]
    # the trace and the final eval report are in the bucket, not only in the local staging copy
    trace = json.loads(s3.client().get_object(Bucket=s3.bucket, Key="sft/trace.json")["Body"].read())
    assert [e["args"]["step"] for e in trace["traceEvents"] if e.get("name") == "sft/step"] == [0, 1]
    assert "sft/reports/eval_000002.html" in set(s3.keys(s3.bucket, "sft/"))

    # a rerun in the same URL resumes the same registered run (nothing left to train)
    again = jaxcook.run("sft", tiny=True, **overrides)
    assert not any("train/loss" in r for r in again.metrics)
    with RunRegistry.open() as reg:
        assert [r["id"] for r in reg.runs()] == [run["id"]]

    # export from the run's URL: its newest committed checkpoint, fetched
    out = tmp_path / "peft"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export.py"), url, "--format", "peft", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    info = json.loads((out / "jaxcook_export.json").read_text())
    assert info["step"] == 2
    # a step the bucket has no commit for is one clear line
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export.py"), f"{url}/checkpoints/7", "--format", "peft"]
        + ["--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2 and "not a committed checkpoint (committed steps: [1, 2])" in done.stderr
