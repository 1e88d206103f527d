"""What the README shows, a test runs: every command of every ```bash block and every ```python block.

`COVERED` says how each one is checked; a block or command that is not in it fails
`test_every_readme_block_is_covered`, naming the block. To cover a new command add one line:

    "python -m jaxcook.serve --help": Run(expect="usage:"),        # runs here, exit 0, output checked
    ".venv/bin/python scripts/train.py --recipe X a=1": Train(),  # dry-run keys + a --tiny run
    "make-a-release": CI(),                                       # a line .ci/run runs as it is
    "python -m jaxcook.serve ...": By("tests/serve/test_x.py::test_y"),  # another test runs it as written

Keys are the commands as the README writes them (a python block: its code without imports, on one
line). `.venv/bin/python` and `python` run as this interpreter, from a scratch folder that holds
the files a command names (`FILES`), with the checkout on the path. Long commands are `Slow`:
`.ci/run` runs them (`pytest -m slow tests/test_readme.py`) with their output checked.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"

CHATS = "".join(
    json.dumps(
        {"messages": [{"role": "user", "content": f"{i} + 1?"}, {"role": "assistant", "content": f"{i + 1}"}]}
    )
    + "\n"
    for i in range(16)
)
MY_ENV = '''
import dataclasses
from jaxcook.rl.envs.arithmetic import ArithmeticDatasetBuilder

@dataclasses.dataclass(frozen=True, kw_only=True)
class MyEnvBuilder(ArithmeticDatasetBuilder):
    """A user's own env builder, as the README names it."""
'''
# Files the README's commands name, written into the scratch folder each command runs in.
FILES = {"chats.jsonl": CHATS, "mypkg/__init__.py": "", "mypkg/envs.py": MY_ENV}


@dataclass(frozen=True)
class CI:
    """Run by `.ci/run`, which must hold `line` (default: the command itself) as one of its lines."""

    line: str | None = None


@dataclass(frozen=True)
class Run:
    """Run here as it is: exit status 0 and `expect` in its output."""

    expect: str = ""
    timeout: int = 120


@dataclass(frozen=True)
class Train:
    """A `scripts/train.py` command: its `--dry-run` config has every `key=value` it gives; then it
    runs `--tiny` with `tiny` changes (a key -> a value, or None to leave the key out) and a bound
    `max_steps`, and must finish with a checkpoint."""

    tiny: dict = field(default_factory=dict)
    max_steps: int = 1


@dataclass(frozen=True)
class Python:
    """A python block: each `jaxcook.run(recipe, **kw)` in it is checked against `make_config` and
    runs as `tiny=True` with `tiny` changes and `max_steps`; the rest of the block runs on its result."""

    tiny: dict = field(default_factory=dict)
    max_steps: int = 1


@dataclass(frozen=True)
class RunsCli:
    """A `python -m jaxcook.runs` command, run on a registry holding one run (RUN_ID is its id)."""

    expect: str


@dataclass(frozen=True)
class By:
    """Run as written by another test (`file::name`), which reads the command from the README; that
    test must exist, and a slow one must be on `.ci/run`'s slow line."""

    test: str


@dataclass(frozen=True)
class Slow:
    """A long command run by `.ci/run` through the slow test below with `extra` arguments appended,
    its output and metrics checked."""

    extra: tuple[str, ...] = ()


TINY_MODEL = "tiny-random-smollm2"
SECTION = "tests/scripts/test_readme_section.py::test_readme_command"
SERVE = "tests/serve/test_readme_restart.py::test_readme_commands_then_sigkill_restart_and_resume"
TRAIN = ".venv/bin/python scripts/train.py --recipe"
TINKER = "tests/backends/test_tinker_recipes.py::test_readme_command_trains_on_a_server"
COVERED = {
    # Quick start (a fresh clone: .ci/run does exactly this)
    "python3 -m venv .venv": CI(),
    ".venv/bin/pip install -e .": CI(),
    f"{TRAIN} sft": Slow(extra=("max_steps=3",)),
    '.venv/bin/pip install -e ".[test]"': CI(),
    ".venv/bin/pytest": CI(),
    # Recipes
    f"{TRAIN} sft --help": Run(expect="short names (name -> the key it sets):"),
    f"{TRAIN} sft lora_rank=16 learning_rate=3e-4 max_steps=100": Train(),
    f"{TRAIN} sft dataset=chats.jsonl epochs=3 model.lora.rank=8": Train(),
    f"{TRAIN} dpo model=HuggingFaceTB/SmolLM2-360M-Instruct dpo_beta=0.1": Train(tiny={"model": None}),
    f"{TRAIN} rl env=mypkg.envs:MyEnvBuilder max_steps=20": Train(
        tiny={"env_options": '{"n_test_problems": 2}'}
    ),
    f"{TRAIN} distill teacher_model=HuggingFaceTB/SmolLM2-360M-Instruct": Train(
        tiny={"teacher_model": TINY_MODEL, "n_eval_prompts": "2"}
    ),
    'result = jaxcook.run( "sft", model="smollm2-135m-instruct", dataset="chats.jsonl", epochs=3, '
    "learning_rate=2e-4, lora_rank=16 ) result.metrics[-1], result.final_checkpoint": Python(
        tiny={"model": None}
    ),
    # Export, chat and evaluation (tests/scripts/test_readme_section.py reads this section)
    ".venv/bin/python scripts/export.py runs/sft --format merged --out exports/sft": By(SECTION),
    ".venv/bin/python scripts/export.py runs/sft --format peft --out exports/sft-lora "
    "--push-to-hub me/sft-lora": By(SECTION),
    ".venv/bin/python scripts/chat.py runs/sft": By(SECTION),
    ".venv/bin/python scripts/sample.py runs/sft --prompts prompts.jsonl --out samples.jsonl "
    "--temperature 0": By(SECTION),
    f"{TRAIN} sft evals=qa.jsonl:exact_match+math:max_tokens=64": By(SECTION),
    ".venv/bin/python -m jaxcook.eval.lm_harness runs/sft --tasks my_task --include-path tasks/": By(SECTION),
    # Run tinker-cookbook on your own machine (tests/serve/test_readme_restart.py reads this section)
    ".venv/bin/python -m jaxcook.serve --model smollm2-135m-instruct --port 8000 "
    '--state-dir "$HOME/jaxcook-serve"': By(SERVE),
    "TINKER_API_KEY=tml-dummy TINKER_BASE_URL=http://127.0.0.1:8000 .venv/bin/python -m "
    "tinker_cookbook.recipes.chat_sl.train base_url=http://127.0.0.1:8000 "
    'model_name="$HOME/jaxcook-serve/tokenizer" renderer_name=role_colon '
    "dataset=\"$(.venv/bin/python -c 'import os, tinker_cookbook; "
    "print(os.path.dirname(tinker_cookbook.__file__))')"
    '/example_data/conversations.jsonl" batch_size=16 learning_rate=3e-4 lora_rank=8 '
    "log_path=/tmp/cookbook-sft behavior_if_log_dir_exists=delete": By(SERVE),
    # jaxcook's recipes on a Tinker-API service (tests/backends/test_tinker_recipes.py runs it on a server)
    f"TINKER_API_KEY=tml-dummy {TRAIN} sft backend=tinker backend.base_url=http://127.0.0.1:8000": By(TINKER),
    # Run registry
    ".venv/bin/python -m jaxcook.runs list": RunsCli(expect="finished"),
    ".venv/bin/python -m jaxcook.runs show RUN_ID": RunsCli(expect="checkpoint step 1 (final)"),
    ".venv/bin/python -m jaxcook.runs lineage RUN_ID": RunsCli(expect="base tiny-random-smollm2"),
}


def readme_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block."""
    blocks, lang, start, lines = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and lang is None:
            lang, start, lines = fence.group(1) or "text", n, []
        elif line.strip() == "```" and lang is not None:
            blocks.append((start, lang, "\n".join(lines)))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def block_commands(lang: str, code: str) -> list[str]:
    """The commands of a block: a bash block's lines (comments dropped, `\\` joined, split at `&&`);
    a python block's code without its import lines, on one line."""
    if lang == "python":
        body = [line for line in code.splitlines() if not re.match(r"\s*(import|from)\s", line)]
        return [" ".join(" ".join(body).split())]
    commands, pending = [], ""
    for line in code.splitlines():
        line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        commands += [" ".join(c.split()) for c in pending.split("&&") if c.strip()]
        pending = ""
    return commands


def all_commands() -> list[tuple[str, str]]:
    """(where, command) for every command of every bash and python block of the README."""
    out = []
    for line, lang, code in readme_blocks(README.read_text()):
        if lang in ("bash", "sh", "shell", "python"):
            out += [(f"README.md:{line} ({lang} block)", c) for c in block_commands(lang, code)]
    return out


def commands_of(kind) -> list[str]:
    return [c for _, c in all_commands() if isinstance(COVERED.get(c), kind)]


def test_every_readme_block_is_covered():
    missing = [f"{where}: {command}" for where, command in all_commands() if command not in COVERED]
    assert not missing, (
        "README commands no test runs (add each to COVERED in tests/test_readme.py):\n" + "\n".join(missing)
    )
    stale = sorted(set(COVERED) - {c for _, c in all_commands()})
    assert not stale, f"COVERED lists commands the README no longer has: {stale}"


def test_block_parsing():
    code = "# a comment\nfoo --x 1 \\\n  --y 2 && bar  # why\n\nbaz"
    assert block_commands("bash", code) == ["foo --x 1 --y 2", "bar", "baz"]
    assert block_commands("python", "import a\nfrom b import c\n\nx = f(\n    1\n)\nx") == ["x = f( 1 ) x"]
    assert readme_blocks("a\n```bash\nls\n```\n```\nplain\n```") == [(2, "bash", "ls"), (5, "text", "plain")]


@pytest.mark.parametrize("command", commands_of(CI))
def test_ci_runs_the_command(command):
    line = COVERED[command].line or command
    assert line in [raw.strip() for raw in CI_RUN.read_text().splitlines()], f".ci/run does not run {line!r}"


@pytest.mark.parametrize("command", commands_of(By))
def test_another_test_runs_the_command(command):
    path, name = COVERED[command].test.split("::")
    source = (ROOT / path).read_text()
    assert re.search(rf"^def {name}\(", source, re.M), f"{path} has no test {name}"
    slow = re.search(rf"@pytest\.mark\.slow\n(@[^\n]*\n)*def {name}\(", source)
    if slow or "pytestmark = pytest.mark.slow" in source:
        slow_line = " ".join(CI_RUN.read_text().replace("\\\n", " ").split("pytest -m slow")[1:])
        assert path in slow_line, f"{path} is slow and not on .ci/run's slow line"


def test_ci_runs_the_slow_readme_commands():
    assert re.search(r"pytest -m slow [^\n]*tests/test_readme\.py", CI_RUN.read_text())


def _scratch(tmp_path: Path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def _argv(command: str) -> list[str]:
    argv = shlex.split(command)
    if argv[0] in (".venv/bin/python", "python", "python3"):
        argv[0] = sys.executable
    if len(argv) > 1 and argv[1].startswith("scripts/"):
        argv[1] = str(ROOT / argv[1])
    return argv


def _run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(cwd)])}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", commands_of(Run))
def test_run_commands(command, tmp_path):
    check = COVERED[command]
    proc = _run(_argv(command), _scratch(tmp_path), check.timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert check.expect in proc.stdout + proc.stderr


def _dotted(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _same(value, literal: str) -> bool:
    """Whether a config value is what the command line literal says."""
    if isinstance(value, bool):
        return str(value).lower() == literal.lower()
    if isinstance(value, (int, float)):
        return math.isclose(value, float(literal))
    if isinstance(value, dict):
        return value == json.loads(literal)
    return str(value) == literal


def _long_key(recipe: str, key: str, config: dict) -> str:
    from jaxcook.recipes import get_recipe

    table = get_recipe(recipe).ALIASES
    try:
        _dotted(config, key)
        if not isinstance(_dotted(config, key), dict):
            return key
    except (KeyError, TypeError):
        pass
    return table[key]


@pytest.mark.parametrize("command", commands_of(Train))
def test_train_commands(command, tmp_path):
    check = COVERED[command]
    argv = _argv(command)
    recipe = argv[argv.index("--recipe") + 1]
    overrides = [a for a in argv[2:] if "=" in a and not a.startswith("-")]
    cwd = _scratch(tmp_path)
    dry = _run([*argv, "--dry-run"], cwd, 300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    config = json.loads(dry.stdout)
    for override in overrides:
        key, _, literal = override.partition("=")
        long = _long_key(recipe, key, config)
        assert _same(_dotted(config, long), literal), (
            f"{override}: the config has {long}={_dotted(config, long)!r}"
        )
    tiny = {k: v for k, v in (o.partition("=")[::2] for o in overrides)}
    tiny.update(check.tiny)
    tiny.update({"max_steps": str(check.max_steps), "log_dir": str(tmp_path / "run")})
    tiny_argv = [
        *argv[:2],
        "--recipe",
        recipe,
        "--tiny",
        *(f"{k}={v}" for k, v in tiny.items() if v is not None),
    ]
    proc = _run(tiny_argv, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"log dir: {tmp_path / 'run'}" in proc.stdout and "final checkpoint: " in proc.stdout


@pytest.mark.parametrize("command", commands_of(Python))
def test_python_blocks(command, tmp_path, monkeypatch):
    import jaxcook

    check = COVERED[command]
    code = next(
        code
        for _, lang, code in readme_blocks(README.read_text())
        if lang == "python" and block_commands("python", code) == [command]
    )
    real_run, calls = jaxcook.run, []

    def checked_run(recipe, **kwargs):
        cfg = jaxcook.make_config(recipe, overrides=kwargs)  # every argument is a valid, typed key
        calls.append((recipe, cfg))
        tiny = {k: v for k, v in {**kwargs, **check.tiny}.items() if v is not None}
        tiny.update(max_steps=check.max_steps, log_dir=str(tmp_path / f"run{len(calls)}"))
        return real_run(recipe, tiny=True, **tiny)

    monkeypatch.setattr(jaxcook, "run", checked_run)
    monkeypatch.chdir(_scratch(tmp_path))
    namespace: dict = {}
    exec(compile(code, "README.md python block", "exec"), namespace)  # noqa: S102
    assert calls, "the block calls jaxcook.run"
    recipe, cfg = calls[0]
    if recipe == "sft":
        assert (cfg.model.name, cfg.dataset, cfg.num_epochs, cfg.max_steps) == (
            "smollm2-135m-instruct",
            "chats.jsonl",
            3,
            None,
        )
        assert (cfg.optim.learning_rate, cfg.model.lora.rank) == (2e-4, 16)
    result = namespace["result"]
    assert result.final_checkpoint and Path(result.final_checkpoint).is_dir()
    assert "train/loss" in "".join(json.dumps(r) for r in result.metrics)


@pytest.fixture
def one_registered_run(tmp_path, monkeypatch):
    import jaxcook

    registry = tmp_path / "runs.sqlite"
    monkeypatch.setenv("JAXCOOK_REGISTRY", str(registry))
    result = jaxcook.run(
        "sft", tiny=True, max_steps=1, log_dir=str(tmp_path / "run"), **{"run.save_every": 0}
    )
    from jaxcook.runs import RunRegistry

    with RunRegistry(registry) as reg:
        (run,) = reg.runs()
    assert reg and result.final_checkpoint
    return run["id"]


def test_runs_cli_commands(one_registered_run, tmp_path):
    commands = commands_of(RunsCli)
    assert commands
    for command in commands:
        proc = _run(_argv(command.replace("RUN_ID", one_registered_run)), tmp_path, 120)
        assert proc.returncode == 0, proc.stderr
        assert COVERED[command].expect in proc.stdout, (command, proc.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("command", commands_of(Slow))
def test_slow_commands(command, tmp_path):
    """The quick start's fine-tune on the real model, bounded as the README says (`.ci/run` runs it)."""
    extra = COVERED[command].extra
    assert all(e in README.read_text() for e in extra), "the README says how CI bounds this command"
    log_dir = tmp_path / "run"
    proc = _run([*_argv(command), *extra, f"log_dir={log_dir}"], ROOT, 1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"log dir: {log_dir}" in proc.stdout and "final checkpoint: " in proc.stdout
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/nll"] for r in rows if "train/nll" in r]
    held_out = [r["test/nll"] for r in rows if "test/nll" in r]
    assert losses and all(math.isfinite(x) for x in losses)
    assert len(held_out) == 2 and all(math.isfinite(x) for x in held_out)  # before and after
