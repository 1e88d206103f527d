"""Smoke runs of the tiny `distill` (with its own SFT teacher) and `prompt_distill` recipes."""

import json

import pytest

import jaxcook
from tests.reports import eval_report, steps


def rows(log_dir):
    return [json.loads(line) for line in open(log_dir / "metrics.jsonl")]


@pytest.mark.slow
def test_distill_tiny_makes_a_teacher_then_distils_and_reuses_it(tmp_path):
    log_dir = tmp_path / "run"
    result = jaxcook.run("distill", tiny=True, **{"run.log_dir": str(log_dir)})
    teacher = log_dir / "teacher_sft" / "checkpoints" / "3"
    assert teacher.is_dir()
    config = json.loads((log_dir / "distill_config.json").read_text())
    assert config["datasets"][0]["teacher"]["model"]["load_checkpoint"] == str(teacher)
    metrics = rows(log_dir)
    assert "test/teacher_kl" in metrics[0] and "test/teacher_kl" in metrics[-1]
    assert all("teacher_kl/dataset_0" in r for r in metrics[:3])
    assert result.final_checkpoint.endswith("checkpoints/3")
    # a rerun finds both the teacher and the finished run: nothing is trained again
    again = jaxcook.run("distill", tiny=True, **{"run.log_dir": str(log_dir)})
    assert again.final_checkpoint == result.final_checkpoint
    assert not any("train/loss" in r for r in again.metrics)


def test_prompt_distill_tiny_generates_answers_trains_and_evaluates(tmp_path):
    log_dir = tmp_path / "run"
    jaxcook.run("prompt_distill", tiny=True, **{"run.log_dir": str(log_dir)})
    answers = [json.loads(line) for line in open(log_dir / "teacher_train.jsonl")]
    assert len(answers) == 8  # tiny keeps truncated answers
    assert all(
        [m["role"] for m in a["messages"]] == ["user", "assistant"] for a in answers
    )  # no system prompt
    metrics = rows(log_dir)
    assert metrics[0]["data/teacher_train/answers"] == 8
    for key in ("test/criterion/boxed", "test/teacher_kl", "test/nll"):
        assert key in metrics[0] and key in metrics[-1]
    assert metrics[-1]["step"] == 2
    assert steps(log_dir, "sft/step") == [0, 1] and steps(log_dir, "sft/eval") == [0, 2]
    page = eval_report(log_dir, 2)
    assert "the student&#x27;s answers to 4 held-out questions" in page and "<th>ahoy</th>" in page
