"""Every command of the README's "Export, chat and evaluation" section, run as written (with a tiny
run at runs/sft, the files it names, and small sampling lengths appended), its outcome checked.

Marked slow (six fresh interpreters, a few minutes on 2 cores): `.ci/run` runs it with `-m slow`;
the default suite covers each script in process (test_export, test_chat_sample, tests/eval)."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scripts.hub_standin import HubStandIn

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Export, chat and evaluation"


def section_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text[text.index(SECTION) + len(SECTION) :]
    body = body[: body.index("\n## ")]
    commands, inside = [], False
    for line in body.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside and line.strip() and not line.startswith("#"):
            commands.append(line.strip())
    return commands


@dataclass(frozen=True)
class Case:
    extra: tuple[str, ...] = ()  # appended to the command: bounds for the tiny model
    stdin: str = ""
    hub: bool = False  # run against the hub stand-in


PY = ".venv/bin/python"
CASES = {
    f"{PY} scripts/export.py runs/sft --format merged --out exports/sft": Case(),
    f"{PY} scripts/export.py runs/sft --format peft --out exports/sft-lora --push-to-hub me/sft-lora": Case(
        hub=True
    ),
    f"{PY} scripts/chat.py runs/sft": Case(extra=("--max-tokens", "4"), stdin="Hi!\n/reset\n/quit\n"),
    f"{PY} scripts/sample.py runs/sft --prompts prompts.jsonl --out samples.jsonl --temperature 0": Case(
        extra=("--max-tokens", "4")
    ),
    f"{PY} scripts/train.py --recipe sft evals=qa.jsonl:exact_match+math:max_tokens=64": Case(
        extra=("--tiny", "max_steps=2", "eval_every=2")
    ),
    f"{PY} -m jaxcook.eval.lm_harness runs/sft --tasks my_task --include-path tasks/": Case(
        extra=("--limit", "2")
    ),
}

QA = [{"prompt": "What is 2+3?", "reference": "5"}, {"prompt": "What is 3*3?", "reference": "9"}]
TASK = """task: my_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


@pytest.fixture(scope="module")
def scratch(lora_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(lora_run, folder / "runs" / "sft")
    (folder / "scripts").symlink_to(ROOT / "scripts")  # the commands run from a checkout's root
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": q["prompt"]}) + "\n" for q in QA))
    (folder / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QA))
    (folder / "tasks").mkdir()
    docs = [{"question": "The sky is", "choices": [" blue", " red"], "answer": 0}] * 2
    (folder / "tasks" / "my_task.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "tasks" / "my_task.yaml").write_text(TASK.format(data=folder / "tasks" / "my_task.jsonl"))
    return folder


def test_every_command_of_the_section_has_a_case():
    assert set(section_commands()) == set(CASES)


def run(command: str, case: Case, cwd: Path, env: dict):
    argv = shlex.split(command)
    argv[0] = sys.executable  # .venv/bin/python: this interpreter
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [*argv, *case.extra], cwd=cwd, input=case.stdin, capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", list(CASES))
def test_readme_command(command, scratch):
    case = CASES[command]
    if case.hub:
        with HubStandIn() as hub:
            done = run(command, case, scratch, {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_standin"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert "adapter_model.safetensors" in hub.files["me/sft-lora"]
        return
    done = run(command, case, scratch, {})
    assert done.returncode == 0, done.stderr[-3000:]
    if "--format merged" in command:
        assert (scratch / "exports/sft/model.safetensors").exists()
    elif "chat.py" in command:
        assert "renderer chatml" in done.stdout and "(conversation reset)" in done.stdout
    elif "sample.py" in command:
        lines = [json.loads(line) for line in (scratch / "samples.jsonl").read_text().splitlines()]
        assert [line["prompt"] for line in lines] == [q["prompt"] for q in QA]
        assert all(len(line["completions"]) == 1 for line in lines)
    elif "train.py" in command:
        rows = [
            json.loads(line) for line in (scratch / "runs/sft-tiny/metrics.jsonl").read_text().splitlines()
        ]
        assert any("eval/qa/exact_match" in r and "eval/qa/math" in r for r in rows)
    else:
        results = json.loads(done.stdout[done.stdout.index("{") :])
        assert 0.0 <= results["my_task"]["acc,none"] <= 1.0
