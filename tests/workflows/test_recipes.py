"""Smoke runs of every recipe's tiny variant, and the workflows' failure handling."""

import json

import pytest

import jaxcook
from jaxcook.workflows.training_run import TrainingError


def run_tiny(name, tmp_path, **overrides):
    return jaxcook.run(name, tiny=True, **{"run.log_dir": str(tmp_path / name), **overrides})


def metric_rows(result):
    return [json.loads(line) for line in open(f"{result.log_dir}/metrics.jsonl")]


def test_sft_tiny_trains_evaluates_and_checkpoints(tmp_path):
    result = run_tiny("sft", tmp_path)
    rows = metric_rows(result)
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})
    assert any("train/nll" in r for r in rows) and "test/nll" in rows[-1] and "test/bpb" in rows[-1]
    assert result.final_checkpoint.endswith("checkpoints/4")


def test_dpo_tiny_starts_at_log2(tmp_path):
    result = run_tiny("dpo", tmp_path)
    first = next(r for r in result.metrics if "train/dpo_loss" in r)
    # policy == reference at step 0: every reward is 0, so the loss is log 2
    assert first["train/dpo_loss"] == pytest.approx(0.693147, abs=1e-5)
    assert "test/accuracy" in result.metrics[-1]


def test_reward_model_tiny_reports_label_accuracy(tmp_path):
    result = run_tiny("reward_model", tmp_path)
    final = result.metrics[-1]
    assert 0.0 <= final["test/label_accuracy"] <= 1.0
    # the default data mixes slipped and off-topic rejections; each kind is scored on its own
    assert {"test/label_accuracy/slip", "test/label_accuracy/off_topic"} <= set(final)


def test_nan_loss_stops_with_error_and_keeps_last_good_checkpoint(tmp_path):
    overrides = {"optim.learning_rate": 1e30, "run.save_every": 1, "max_steps": 4}
    with pytest.raises(
        TrainingError, match=r"non-finite train/loss at step \d+.*Last good checkpoint: .*checkpoints/\d"
    ):
        run_tiny("sft", tmp_path, **overrides)


def test_rl_multiturn_tiny_runs(tmp_path):
    result = run_tiny("rl_multiturn", tmp_path)
    assert any("env/all/turns_per_episode" in r for r in result.metrics)
    assert "test/env/all/reward/total" in result.metrics[-1]
