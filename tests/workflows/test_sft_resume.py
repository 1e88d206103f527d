"""Kill an SFT run with SIGKILL mid-way, rerun the same command: it resumes exactly."""

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

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["num_epochs=2", "max_steps=12", "run.save_every=3", "eval_every=4", "optim.learning_rate=3e-3"]


def command(log_dir):
    return [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "--recipe",
        "sft",
        "--tiny",
        f"run.log_dir={log_dir}",
        *ARGS,
    ]


def final_params(log_dir):
    steps = sorted(int(p.name) for p in (log_dir / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        tree = ckptr.restore(
            log_dir / "checkpoints" / str(steps[-1]),
            args=ocp.args.Composite(state=ocp.args.StandardRestore()),
        )
    return steps[-1], tree["state"]["params"]


def metric_steps(log_dir):
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows]


@pytest.mark.slow
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(command(straight), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "3").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not (killed / "checkpoints" / "12").exists(), "the run finished before it was killed"

    rerun = subprocess.run(command(killed), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resumed from" in rerun.stderr

    step_a, params_a = final_params(straight)
    step_b, params_b = final_params(killed)
    assert step_a == step_b == 12
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)
    steps = metric_steps(killed)
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert set(steps) == set(metric_steps(straight))
