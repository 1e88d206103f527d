"""The run registry: its tables, what it derives from configs and metrics, the runner hook, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxcook
from jaxcook.recipes import RECIPES
from jaxcook.runs import RegistryError, RunRegistry, registry_path
from jaxcook.runs.facts import checkpoint_sha256, dataset_of, parents_of, summarize

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def reg(tmp_path):
    with RunRegistry(tmp_path / "runs.sqlite") as registry:
        yield registry


def test_registry_path_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCOOK_REGISTRY", str(tmp_path / "r.sqlite"))
    assert registry_path() == tmp_path / "r.sqlite"
    monkeypatch.setenv("JAXCOOK_REGISTRY", "off")
    assert registry_path() is None and RunRegistry.open() is None
    monkeypatch.delenv("JAXCOOK_REGISTRY")
    monkeypatch.setenv("JAXCOOK_CACHE", str(tmp_path / "cache"))
    assert registry_path() == tmp_path / "cache" / "runs.sqlite"


def test_runs_checkpoints_and_lineage(reg):
    sft = reg.start(recipe="sft", config={"max_steps": 3}, log_dir="/r/sft", base_model="m")
    reg.add_checkpoint(sft, "/r/sft/checkpoints/2", step=2, sha256="a" * 64)
    reg.add_checkpoint(sft, "/r/sft/checkpoints/3", step=3, sha256="b" * 64, final=True)
    reg.finish(sft, final_metrics={"test/nll": 0.5}, best_metrics={"test/nll": {"value": 0.5, "step": 3}})
    dpo = reg.start(
        recipe="dpo", config={}, log_dir="/r/dpo", base_model="m", parents=[("init", "/r/sft/checkpoints/3")]
    )
    distill = reg.start(
        recipe="distill",
        config={},
        log_dir="/r/distill",
        parents=[("teacher", "/r/dpo/checkpoints/9"), ("init", "/elsewhere/ckpt")],
    )
    reg.add_checkpoint(dpo, "/r/dpo/checkpoints/9", step=9, sha256=None, final=True)
    reg.set_parents(distill, [("teacher", "/r/dpo/checkpoints/9"), ("init", "/elsewhere/ckpt")])

    run = reg.get(sft)
    assert (run["status"], run["base_model"], run["config"], run["final_metrics"]) == (
        "finished",
        "m",
        {"max_steps": 3},
        {"test/nll": 0.5},
    )
    assert reg.final_checkpoint(sft)["path"] == "/r/sft/checkpoints/3"
    assert [c["step"] for c in reg.checkpoints(sft)] == [2, 3]
    assert reg.run_of_checkpoint("/r/sft/checkpoints/3")["id"] == sft
    lineage = [(p["depth"], p["role"], p["parent_run"]) for p in reg.lineage(distill)]
    assert lineage == [(1, "init", None), (1, "teacher", dpo), (2, "init", sft)]
    assert [c["run_id"] for c in reg.children(sft)] == [dpo]
    assert [r["id"] for r in reg.runs(recipe="sft")] == [sft]
    assert {r["id"] for r in reg.runs(status="running")} == {dpo, distill}


def test_get_by_prefix_and_clear_errors(reg):
    a = reg.start(recipe="sft", config={}, log_dir=None, run_id="sft-1-aaaa")
    reg.start(recipe="sft", config={}, log_dir=None, run_id="sft-1-aabb")
    assert reg.get("sft-1-aaa")["id"] == a
    with pytest.raises(RegistryError, match="'sft-1-a' matches 2 runs"):
        reg.get("sft-1-a")
    with pytest.raises(RegistryError, match="no run 'nope'"):
        reg.get("nope")


def test_a_file_that_is_not_a_registry_is_a_clear_error(tmp_path):
    (tmp_path / "x.sqlite").write_bytes(b"not a database at all" * 10)
    with pytest.raises(RegistryError, match="is not a jaxcook run registry"):
        RunRegistry(tmp_path / "x.sqlite")


def test_summarize_final_and_best():
    history = [
        {"step": 0, "test/nll": 2.0, "test/accuracy": 0.5, "train/loss": 9.0},
        {"step": 1, "train/loss": 8.0},
        {"step": 2, "test/nll": 1.0, "test/accuracy": 0.25},
        {"step": 3, "test/nll": 1.5, "test/accuracy": 0.75, "train/loss": float("nan")},
    ]
    final, best = summarize(history)
    assert final == {"test/nll": 1.5, "test/accuracy": 0.75, "train/loss": "nan"}
    # nll: smaller is better (1.0 at step 2); accuracy: larger (0.75 at step 3)
    assert best == {"test/nll": {"value": 1.0, "step": 2}, "test/accuracy": {"value": 0.75, "step": 3}}


def test_checkpoint_sha256_is_a_manifest_of_file_hashes(tmp_path):
    ckpt = tmp_path / "7"
    (ckpt / "state").mkdir(parents=True)
    (ckpt / "state" / "params").write_bytes(b"\x00\x01")
    (ckpt / "meta").write_text("{}")
    files = {"meta": b"{}", "state/params": b"\x00\x01"}
    manifest = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())
    )
    assert checkpoint_sha256(ckpt) == hashlib.sha256(manifest.encode()).hexdigest()
    (ckpt / "state" / "params").write_bytes(b"\x00\x02")
    assert checkpoint_sha256(ckpt) != hashlib.sha256(manifest.encode()).hexdigest()
    assert checkpoint_sha256(tmp_path / "missing") is None and checkpoint_sha256("gs://b/ckpt") is None


def test_parents_and_dataset_from_a_config(tmp_path):
    config = {
        "model": {"name": "m", "load_checkpoint": str(tmp_path / "a" / ".." / "sft")},
        "datasets": [
            {"dataset": "d", "dataset_options": {"k": 1}, "teacher": {"model": {"load_checkpoint": "gs://t"}}}
        ],
    }
    assert parents_of(config) == [("init", str(tmp_path / "sft")), ("teacher", "gs://t")]
    assert dataset_of(config) == {"datasets": [{"dataset": "d", "dataset_options": {"k": 1}}]}
    assert dataset_of({"env": "arithmetic", "env_options": {}}) == {"env": "arithmetic"}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(RECIPES, "fake", "tests.fake_recipe")
    return "fake"


def test_every_run_is_recorded_at_start_and_finish_and_a_rerun_resumes_the_same_run(fake, tmp_path):
    log_dir = tmp_path / "run"
    jaxcook.run(fake, log_dir=str(log_dir), steps=3)
    with RunRegistry.open() as reg:
        (run,) = reg.runs()
    assert (run["recipe"], run["status"], run["log_dir"]) == ("fake", "finished", os.path.realpath(log_dir))
    assert run["config"]["steps"] == 3 and run["config"]["lora"] == {"rank": 32, "alpha": None}
    assert run["final_metrics"] == {"train/loss": 1 / 3, "optim/lr": 1e-3}  # loss 1/(s+1) at step 2
    jaxcook.run(fake, log_dir=str(log_dir), steps=4)  # same log dir: the same run, continued
    with RunRegistry.open() as reg:
        (again,) = reg.runs()
    assert again["id"] == run["id"] and again["config"]["steps"] == 4
    jaxcook.run(fake, log_dir=str(log_dir), steps=2, log_dir_behavior="delete")  # a fresh run
    with RunRegistry.open() as reg:
        assert len(reg.runs()) == 2


def test_a_failing_run_is_recorded_as_failed(fake, tmp_path):
    log_dir = tmp_path / "run"
    log_dir.mkdir()
    (log_dir / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(Exception) as info:
        jaxcook.run(fake, log_dir=str(log_dir), log_dir_behavior="raise")
    with RunRegistry.open() as reg:
        (run,) = reg.runs()
    assert run["status"] == "failed" and run["error"] == f"{type(info.value).__name__}: {info.value}"


def test_an_unwritable_registry_does_not_stop_the_run(fake, tmp_path, monkeypatch, caplog):
    (tmp_path / "bad.sqlite").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("JAXCOOK_REGISTRY", str(tmp_path / "bad.sqlite"))
    result = jaxcook.run(fake, log_dir=str(tmp_path / "run"), steps=1)
    assert result.metrics[-1]["step"] == 0
    assert "run registry unavailable" in caplog.text


def _runs_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "jaxcook.runs", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_list_show_lineage(tmp_path):
    path = tmp_path / "runs.sqlite"
    with RunRegistry(path) as reg:
        sft = reg.start(recipe="sft", config={"lr": 1}, log_dir="/r/sft", base_model="m", run_id="sft-x")
        reg.add_checkpoint(sft, "/r/sft/checkpoints/3", step=3, sha256="c" * 64, final=True)
        reg.finish(
            sft, final_metrics={"test/nll": 0.25}, best_metrics={"test/nll": {"value": 0.25, "step": 3}}
        )
        reg.start(
            recipe="distill",
            config={},
            log_dir="/r/d",
            parents=[("teacher", "/r/sft/checkpoints/3")],
            run_id="distill-y",
        )
    listed = _runs_cli("--registry", str(path), "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["distill-y", "running"], ["sft-x", "finished"]]
    assert "test/nll=0.25" in lines[1]
    shown = _runs_cli("--registry", str(path), "show", "sft", "--json")
    detail = json.loads(shown.stdout)
    assert detail["id"] == "sft-x" and detail["checkpoints"][0]["sha256"] == "c" * 64
    assert detail["children"][0]["run_id"] == "distill-y"
    text = _runs_cli("--registry", str(path), "show", "sft-x").stdout
    assert "checkpoint step 3 (final): /r/sft/checkpoints/3 sha256 " + "c" * 64 in text
    lineage = _runs_cli("--registry", str(path), "lineage", "distill-y").stdout.splitlines()
    assert lineage[1].split()[:3] == ["teacher", "<-", "sft-x"]
    missing = _runs_cli("--registry", str(path), "show", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith(
        "python -m jaxcook.runs: error: no run 'nope'"
    )
