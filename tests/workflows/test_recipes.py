"""Smoke runs of every recipe's tiny variant, and the workflows' failure handling."""

import json

import pytest

import jaxcook
from jaxcook.workflows.training_run import TrainingError
from tests.reports import eval_report, spans, steps


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


def test_dpo_tiny_starts_at_log2_with_sampling_evals_a_trace_and_pair_reports(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"prompt": "What is 2+3?", "reference": "5"}) + "\n")
    result = run_tiny("dpo", tmp_path, evals=(f"{qa}:exact_match+contains:max_tokens=4:name=qa",))
    first = next(r for r in result.metrics if "train/dpo_loss" in r)
    # policy == reference at step 0: every reward is 0, so the loss is log 2
    assert first["train/dpo_loss"] == pytest.approx(0.693147, abs=1e-5)
    assert "test/accuracy" in result.metrics[-1]
    # `evals=` on a non-sft recipe: at each DPO eval (tiny: eval_every=2, 3 steps -> 0, 2, 3)
    rows = metric_rows(result)
    assert [r["step"] for r in rows if "eval/qa/exact_match" in r] == [0, 2, 3]
    assert all("test/dpo_loss" in r for r in rows if "eval/qa/contains" in r)
    assert steps(result.log_dir, "dpo/step") == [0, 1, 2]
    assert steps(result.log_dir, "dpo/reference_logprobs") == [0, 1, 2]
    assert steps(result.log_dir, "dpo/eval") == [0, 2, 3]
    assert len(spans(result.log_dir)["eval/sampling"]) == 3
    page = eval_report(result.log_dir, 3)
    assert "test: DPO metrics over 4 held-out pairs" in page and "eval/qa: 1 samples" in page
    assert "<th>logp_chosen</th><th>ref_chosen</th><th>logp_rejected</th>" in page
    assert "What is 2+3?" in page


def test_reward_model_tiny_reports_label_accuracy(tmp_path):
    result = run_tiny("reward_model", tmp_path)
    final = result.metrics[-1]
    assert 0.0 <= final["test/label_accuracy"] <= 1.0
    # the default data mixes slipped and off-topic rejections; each kind is scored on its own
    assert {"test/label_accuracy/slip", "test/label_accuracy/off_topic"} <= set(final)
    assert steps(result.log_dir, "sft/step") == [0, 1, 2] and steps(result.log_dir, "sft/eval") == [0, 2, 3]
    page = eval_report(result.log_dir, 3)
    assert "reward-model verdicts on" in page and "<th>logp_true_verdict</th>" in page


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
