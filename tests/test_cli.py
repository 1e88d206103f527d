"""The recipe registry, `jaxcook.run` and `scripts/train.py`, with the fake recipe in tests/fake_recipe.py.

In-process tests register it under a name (monkeypatched `RECIPES`); the subprocess tests pass its
module path (`--recipe tests.fake_recipe`), which `get_recipe` accepts for recipes outside the registry.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import jaxcook
from jaxcook import recipes
from jaxcook.config import OverrideError, field_paths
from jaxcook.recipes import RECIPES, RecipeError, get_recipe
from tests import fake_recipe

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "scripts" / "train.py"


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(RECIPES, "fake", "tests.fake_recipe")
    return "fake"


def _train_module():
    spec = importlib.util.spec_from_file_location("train_script", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TRAIN), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_import_jaxcook_is_light_and_versioned():
    code = (
        "import jaxcook, sys; "
        "print(jaxcook.__version__, 'jax' in sys.modules, 'jaxcook.recipes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.split() == [version, "False", "False"]
    assert jaxcook.run is jaxcook.runner.run and jaxcook.RunResult is jaxcook.run_result.RunResult


def test_registry_names_every_recipe():
    assert set(RECIPES) == {"sft", "rl", "rl_multiturn", "dpo", "reward_model", "distill", "prompt_distill"}
    assert all(path == f"jaxcook.recipes.{name}" for name, path in RECIPES.items())


def test_unknown_recipe_lists_the_registered_ones():
    with pytest.raises(RecipeError, match="unknown recipe 'sfx'; registered recipes: sft, rl,"):
        get_recipe("sfx")


def test_unwritten_recipe_says_not_implemented(monkeypatch):
    monkeypatch.setitem(RECIPES, "later", "jaxcook.recipes.not_written_yet")
    with pytest.raises(
        RecipeError, match="recipe 'later' is not implemented yet .no module jaxcook.recipes.not_written_yet"
    ):
        get_recipe("later")
    assert recipes.summary("later") == "(not implemented yet)"
    assert not recipes.is_implemented("later")


def test_import_error_inside_a_recipe_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_recipe_pkg").mkdir()
    (tmp_path / "broken_recipe_pkg" / "__init__.py").write_text("")
    (tmp_path / "broken_recipe_pkg" / "recipe.py").write_text("import a_module_that_does_not_exist_xyz\n")
    (tmp_path / "broken_recipe_pkg" / "partial.py").write_text('"""Half a recipe."""\nConfig = None\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="a_module_that_does_not_exist_xyz"):
        get_recipe("broken_recipe_pkg.recipe")
    with pytest.raises(RecipeError, match="partial.py. lacks tiny, main"):
        get_recipe("broken_recipe_pkg.partial")
    assert recipes.summary("broken_recipe_pkg.partial") == "Half a recipe."


def test_run_applies_overrides_and_returns_the_history(fake, tmp_path):
    result = jaxcook.run(
        fake, tiny=True, log_dir=str(tmp_path), lora={"rank": 8}, **{"adam.learning_rate": 0.01}
    )
    assert result.log_dir == str(tmp_path) and result.final_checkpoint is None
    assert result.run_id.startswith("fake-")
    # tiny() has 2 steps; loss at step s is 1 / (s + 1).
    assert result.metrics == [
        {"step": 0, "train/loss": 1.0, "optim/lr": 0.01},
        {"step": 1, "train/loss": 0.5, "optim/lr": 0.01},
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["lora"] == {"rank": 8, "alpha": None} and config["steps"] == 2


def test_rerun_in_the_same_log_dir_resumes_without_duplicate_steps(fake, tmp_path):
    jaxcook.run(fake, log_dir=str(tmp_path), steps=5)
    result = jaxcook.run(fake, log_dir=str(tmp_path), steps=4, start_step=2, loss_scale=2.0)
    # Steps 0-1 from the first run (1/(s+1)), steps 2-3 from the second (2/(s+1)); 4 dropped.
    assert [(r["step"], r["train/loss"]) for r in result.metrics] == [
        (0, 1.0),
        (1, 0.5),
        (2, 2 / 3),
        (3, 0.5),
    ]


def test_run_rejects_bad_overrides(fake, tmp_path):
    with pytest.raises(OverrideError, match="unknown config key 'lora.rnk'.*Valid keys: .*lora.rank"):
        jaxcook.run(fake, tiny=True, **{"lora.rnk": 1})
    with pytest.raises(OverrideError, match="schedule: expected Literal.*got 'step'"):
        jaxcook.run(fake, schedule="step")


def test_make_config_starts_from_config_or_tiny(fake):
    assert jaxcook.make_config(fake) == fake_recipe.Config()
    assert jaxcook.make_config(fake, tiny=True, overrides=["steps=9"]) == fake_recipe.Config(
        steps=9, lora=fake_recipe.LoraConfig(rank=4)
    )


def test_cli_help_lists_recipes(capsys):
    assert _train_module().main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert f"  {name} " in out
    assert "--recipe NAME --help" in out


def test_cli_recipe_help_lists_every_option(fake, capsys):
    assert _train_module().main(["--recipe", fake, "--tiny", "--help"]) == 0
    out = capsys.readouterr().out
    for path in field_paths(fake_recipe.Config):
        assert f"  {path}: " in out
    assert "lora.rank: int = 4" in out  # the tiny() value
    assert "log_dir: str = '/tmp/jaxcook-fake-recipe'  # where the run writes" in out


def test_cli_dry_run_prints_the_resolved_config(fake, capsys):
    assert _train_module().main(["--recipe", fake, "lora.rank=16", "--dry-run", "adam.betas=0.8,0.9"]) == 0
    config = json.loads(capsys.readouterr().out)
    assert config["lora"]["rank"] == 16 and config["adam"]["betas"] == [0.8, 0.9]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--recipe", "missing"], "recipe 'missing' is not implemented yet"),
        (["--recipe", "fake", "steps=many"], "steps: expected int, got 'many'"),
        (["--recipe", "fake", "stepz=3"], "unknown config key 'stepz'"),
        (["--recipe", "fake", "steps"], "expected an override of the form key=value, got 'steps'"),
        (["steps=3"], "--recipe NAME is required"),
    ],
)
def test_cli_errors_exit_2_with_a_message(fake, capsys, monkeypatch, argv, fragment):
    monkeypatch.setitem(recipes.RECIPES, "missing", "jaxcook.recipes.no_such_module")
    with pytest.raises(SystemExit) as exit_info:
        _train_module().main(argv)
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_cli_subprocess_runs_a_recipe_by_module_path(tmp_path):
    proc = _run_train(
        "--recipe", "tests.fake_recipe", "--tiny", f"log_dir={tmp_path}", "lora.rank=8", "steps=3"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"log dir: {tmp_path}" in proc.stdout
    (run_id,) = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("run id: ")]
    from jaxcook.runs import RunRegistry

    with RunRegistry.open() as reg:  # the subprocess wrote this test's registry ($JAXCOOK_REGISTRY)
        assert reg.get(run_id)["status"] == "finished" and reg.get(run_id)["recipe"] == "tests.fake_recipe"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert json.loads((tmp_path / "config.json").read_text())["lora"]["rank"] == 8
    assert "logging to" in (tmp_path / "logs.log").read_text()


def test_cli_subprocess_bad_value_has_no_traceback(tmp_path):
    proc = _run_train("--recipe", "tests.fake_recipe", f"log_dir={tmp_path}", "lora.rank=big")
    assert proc.returncode == 2
    assert "train.py: error: lora.rank: expected int, got 'big'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not tmp_path.joinpath("metrics.jsonl").exists()  # nothing ran


def _chats(path, n: int, bad_line: int | None = None) -> str:
    with open(path, "w") as f:
        for i in range(1, n + 1):
            if i == bad_line:
                f.write('{"messages": [oops\n')
                continue
            messages = [
                {"role": "user", "content": f"{i} + 1?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return str(path)


USER_ERRORS = {
    # name: (arguments after --recipe, the error line's fragment); {data}/{bad} are files the test writes
    "config key": (
        ["sft", "--tiny", "lora.rank=4"],
        "unknown config key 'lora.rank' for SupervisedConfig. Did you mean model.lora.rank?",
    ),
    "config value": (["sft", "--tiny", "lora_rank=big"], "model.lora.rank: expected int, got 'big'"),
    "short name": (["rl", "--tiny", "epochs=2"], "short name 'epochs' does not apply to this recipe"),
    "unknown recipe": (["sfx"], "unknown recipe 'sfx'; registered recipes: sft, rl,"),
    "data format": (["sft", "--tiny", "dataset={bad}"], "{bad}:3: invalid JSON"),
    "missing file": (["sft", "--tiny", "dataset={missing}"], "{missing}: no such file"),
    "builder option": (
        ["sft", "--tiny", "dataset={data}", 'dataset_options={{"n_per_task": 3}}'],
        "has no option ['n_per_task']",
    ),
    "env import path": (
        ["rl", "--tiny", "env=no_such_pkg.envs:Env"],
        "env 'no_such_pkg.envs:Env': cannot import no_such_pkg.envs",
    ),
    "missing model": (["sft", "--tiny", "model={missing}"], "{missing}: not a model folder or .gguf file"),
}


@pytest.mark.parametrize("kind", sorted(USER_ERRORS))
def test_cli_user_errors_are_one_line_and_exit_2(kind, tmp_path):
    files = {
        "data": _chats(tmp_path / "chats.jsonl", 8),
        "bad": _chats(tmp_path / "bad.jsonl", 4, bad_line=3),
        "missing": str(tmp_path / "nope.jsonl"),
    }
    args, fragment = USER_ERRORS[kind]
    args = [a.format(**files) for a in args]
    proc = _run_train("--recipe", *args, f"log_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]  # one line, nothing else
    assert proc.stderr.startswith("train.py: error: ") and fragment.format(**files) in proc.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    bad = _chats(tmp_path / "bad.jsonl", 4, bad_line=2)
    proc = _run_train("--recipe", "sft", "--tiny", "--debug", f"dataset={bad}", f"log_dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "DataFormatError" in proc.stderr
    assert (
        proc.stderr.splitlines()[-1]
        == f"train.py: error: {bad}:2: invalid JSON: Expecting value at column 15"
    )


def test_cli_tiny_composes_with_the_users_dataset(tmp_path):
    data = _chats(tmp_path / "chats.jsonl", 8)
    proc = _run_train(
        "--recipe", "sft", "--tiny", f"dataset={data}", "max_steps=1", f"log_dir={tmp_path / 'run'}"
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["dataset_options"], config["max_steps"]) == (data, {}, 1)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [0]


def test_cli_help_lists_the_short_names_and_task_names(capsys):
    assert _train_module().main(["--recipe", "distillation", "--help"]) == 0
    out = capsys.readouterr().out
    assert "short names (name -> the key it sets):" in out
    assert "  student_model -> model.name" in out and "  lora_rank     -> model.lora.rank" in out
    assert "epochs" not in out.split("short names")[1]  # distill has no epochs
    assert _train_module().main(["--help"]) == 0
    assert "task names: supervised = sft, reinforcement = rl, preference = dpo, distillation = distill" in (
        capsys.readouterr().out
    )


def _docstring_examples():
    """Each `jaxcook.run(...)` and `scripts/train.py --recipe` line of the entry points' docstrings."""
    import ast
    import shlex

    for path in (ROOT / "jaxcook" / "__init__.py", ROOT / "jaxcook" / "runner.py", TRAIN):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        for line in doc.splitlines():
            code = line.split("#")[0].strip()
            if code.startswith(("jaxcook.run(", "result = jaxcook.run(")):
                call = ast.parse(code.removeprefix("result = ")).body[0].value
                kwargs = {}
                for kw in call.keywords:
                    value = ast.literal_eval(kw.value)
                    kwargs.update(value if kw.arg is None else {kw.arg: value})
                yield path.name, ast.literal_eval(call.args[0]), kwargs
            elif "scripts/train.py --recipe" in code and "..." not in code:
                argv = shlex.split(code)
                recipe = argv[argv.index("--recipe") + 1]
                yield path.name, recipe, [a for a in argv if "=" in a and not a.startswith("-")]


def test_docstring_examples_use_keys_that_exist():
    examples = list(_docstring_examples())
    assert len(examples) >= 6  # 2 in jaxcook/__init__.py, 3 in runner.py, 2 in train.py
    for where, recipe, overrides in examples:
        tiny = isinstance(overrides, dict) and overrides.pop("tiny", False)
        try:
            jaxcook.make_config(recipe, tiny=tiny, overrides=overrides)
        except OverrideError as e:
            raise AssertionError(f"{where}: jaxcook.run({recipe!r}, {overrides}) fails: {e}") from None


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_takes_sampling_evals_and_its_help_says_so(name):
    help_text = _train_module()._recipe_help(name, tiny=True)
    (line,) = [line for line in help_text.splitlines() if line.strip().startswith("evals:")]
    assert "= ()" in line and "exact_match" in line and "jaxcook.eval.sampling_eval" in line
