"""Real tiny recipe runs in the registry: checkpoints with sha256, and distill finding its teacher."""

from __future__ import annotations

import json
import os

import jaxcook
from jaxcook.recipes.distill import finished_teacher
from jaxcook.runs import RunRegistry
from jaxcook.runs.facts import checkpoint_sha256


def test_sft_checkpoints_are_registered_and_distill_finds_its_teacher_through_the_registry(tmp_path):
    teacher_dir = tmp_path / "distill" / "teacher_sft"
    sft = jaxcook.run("sft", tiny=True, max_steps=2, log_dir=str(teacher_dir), **{"run.save_every": 1})
    with RunRegistry.open() as reg:
        (run,) = reg.runs()
        checkpoints = reg.checkpoints(run["id"])
    assert run["status"] == "finished" and run["base_model"] == "tiny-random-smollm2"
    assert run["dataset"] == {
        "dataset": "reasoning_gym_math",
        "dataset_options": {"n_per_task": 12, "test_size": 8},
    }
    assert [(c["step"], c["final"]) for c in checkpoints] == [(1, 0), (2, 1)]
    assert checkpoints[-1]["path"] == os.path.realpath(sft.final_checkpoint)
    assert all(c["sha256"] == checkpoint_sha256(c["path"]) for c in checkpoints)
    nll = [r["test/nll"] for r in sft.metrics if "test/nll" in r]
    assert (
        run["best_metrics"]["test/nll"]["value"] == min(nll) and run["final_metrics"]["test/nll"] == nll[-1]
    )

    # the teacher of a distill run in tmp_path/distill is that finished 2-step run, unchanged
    assert finished_teacher(teacher_dir, 2) == checkpoints[-1]["path"]
    assert finished_teacher(teacher_dir, 3) is None  # another teacher length: not this one

    # distill from the registered run, by an id prefix: its lineage names the SFT run
    log_dir = tmp_path / "student"
    jaxcook.run(
        "distill", tiny=True, teacher_run=run["id"][:-2], max_steps=1, n_eval_prompts=2, log_dir=str(log_dir)
    )
    teacher = json.loads((log_dir / "distill_config.json").read_text())["datasets"][0]["teacher"]["model"]
    assert teacher["load_checkpoint"] == checkpoints[-1]["path"] and teacher["lora"]["rank"] == 4
    with RunRegistry.open() as reg:
        student = reg.runs(recipe="distill")[0]
        assert [(p["role"], p["parent_run"]) for p in reg.lineage(student["id"])] == [("teacher", run["id"])]

    # a changed checkpoint is not reused as a teacher
    params = next(p for p in sorted((teacher_dir / "checkpoints" / "2").rglob("*")) if p.is_file())
    params.write_bytes(params.read_bytes() + b"x")
    assert finished_teacher(teacher_dir, 2) is None
