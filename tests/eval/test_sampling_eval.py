"""The sampling evaluator: spec parsing, scores against independently sampled replies, and a tiny
sft run with `evals=` from the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcook.eval.sampling_eval import SamplingEvalConfig, SamplingEvaluator, parse_eval_spec
from jaxcook.trained import load_trained
from jaxcook.types import SamplingParams

ROOT = Path(__file__).resolve().parents[2]


def test_parse_spec(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"prompt": "q", "reference": "a"}\n')
    cfg = parse_eval_spec(f"{path}:contains+math:max_tokens=64:name=qa:temperature=0.5")
    assert cfg == SamplingEvalConfig(
        path=str(path), scorers=("contains", "math"), max_tokens=64, name="qa", temperature=0.5
    )
    assert (
        parse_eval_spec(str(path)).scorers == ("exact_match",)
        and parse_eval_spec(str(path)).metric_name == "qa"
    )
    with pytest.raises(ValueError, match="unknown scorer \\['bleu'\\]"):
        parse_eval_spec(f"{path}:bleu")
    with pytest.raises(ValueError, match="max_tokens"):
        parse_eval_spec(f"{path}:max_tokens=lots")
    with pytest.raises(ValueError, match="unknown key 'max_tokes'|max_tokes"):
        parse_eval_spec(f"{path}:max_tokes=3")
    with pytest.raises(ValueError, match="missing.jsonl: no such file"):
        parse_eval_spec(str(tmp_path / "missing.jsonl"))


def test_record_without_reference_names_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"prompt": "q", "reference": "a"}\n{"prompt": "q2"}\n')
    trained = load_trained("tiny-random-smollm2")
    with pytest.raises(ValueError, match=f"{path}:2: an eval record needs a string 'reference'"):
        SamplingEvaluator(SamplingEvalConfig(path=str(path)), trained.renderer(), trained.tokenizer)


def test_scores_against_independently_sampled_replies(tmp_path):
    trained = load_trained("tiny-random-smollm2")
    renderer, tok = trained.renderer(), trained.tokenizer
    sampler = trained.sampling_client(seed=0)
    questions = ["What is 2+3?", "Name a colour.", "Say hi."]
    # Temperature 1 with a fixed seed (greedy replies of the random model are all newlines): a
    # request's sample depends on its seed, not on the batch it is in.
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=0, stop=renderer.get_stop_sequences())
    replies = []
    for q in questions:
        tokens = sampler.sample(renderer.build_generation_prompt([{"role": "user", "content": q}]), 1, params)
        replies.append(renderer.parse_response(tokens.result().sequences[0].tokens)[0]["content"])
    assert all(r.strip() for r in replies), replies  # the random model says something
    # Reference 1: the reply itself (exact 1, contains 1); 2: its first 2 characters + "zz" (exact 0,
    # contains 0); 3: a strict prefix of the reply (exact 0, contains 1).
    refs = [replies[0], replies[1][:2] + "zz", replies[2][: max(1, len(replies[2]) // 2)]]
    assert refs[2] != " ".join(replies[2].split())
    path = tmp_path / "qa.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": q, "reference": r}) + "\n" for q, r in zip(questions, refs))
    )
    cfg = SamplingEvalConfig(
        path=str(path), scorers=("exact_match", "contains"), max_tokens=6, batch_size=2, temperature=1.0
    )
    evaluator = SamplingEvaluator(cfg, renderer, tok)
    metrics = evaluator.evaluate(sampler)
    assert [row["response"] for row in evaluator.rows] == replies
    assert metrics["eval/qa/exact_match"] == pytest.approx(1 / 3)
    assert metrics["eval/qa/contains"] == pytest.approx(2 / 3)
    assert [row["scores"]["contains"] for row in evaluator.rows] == [1.0, 0.0, 1.0]


def test_sft_run_with_evals_from_the_cli(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"prompt": "What is 2+3?", "reference": "5"})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "2*4?"}], "reference": "8"})
        + "\n"
    )
    log_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "scripts/train.py"),
        "--recipe",
        "sft",
        "--tiny",
        f"run.log_dir={log_dir}",
        "max_steps=4",
        "eval_every=2",
        "run.save_every=0",
        f"evals={qa}:exact_match+contains+regex+math+semantic_similarity:max_tokens=4:name=qa",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/qa/exact_match" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]  # every eval_every steps and at the end
    keys = {"exact_match", "contains", "regex", "math", "semantic_similarity_lexical", "response_tokens"}
    for r in evals:
        assert {f"eval/qa/{k}" for k in keys} <= set(r)
        assert "test/nll" in r  # beside the held-out NLL
        assert all(0.0 <= r[f"eval/qa/{k}"] <= 1.0 for k in keys - {"response_tokens"})
        assert 1 <= r["eval/qa/response_tokens"] <= 4
    # Timing spans: one per step and one per eval, in a Chrome trace.
    spans = [e for e in json.loads((log_dir / "trace.json").read_text())["traceEvents"] if e["ph"] == "X"]
    assert [e["args"]["step"] for e in spans if e["name"] == "sft/step"] == [0, 1, 2, 3]
    assert [e["args"]["step"] for e in spans if e["name"] == "sft/eval"] == [0, 2, 4]
    assert sum(e["name"] == "eval/sampling" for e in spans) == 3
    # Log tree of each eval: the samples with their scores, and held-out datums with loss weights.
    page = (log_dir / "reports" / "eval_000004.html").read_text()
    assert "eval/qa: 2 samples" in page and "<th>prompt</th><th>reference</th><th>response</th>" in page
    assert "What is 2+3?" in page and "test: held-out NLL over" in page and 'title="weight ' in page


def test_bad_eval_spec_fails_before_training(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "scripts/train.py"),
        "--recipe",
        "sft",
        "--tiny",
        f"run.log_dir={tmp_path}/r",
        f"evals={tmp_path}/nope.jsonl",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300
    )
    assert done.returncode != 0
    assert "nope.jsonl: no such file" in done.stderr
