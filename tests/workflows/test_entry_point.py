"""`jaxcook.run` as users call it: short names, epochs, their own data and env, a named teacher."""

from __future__ import annotations

import dataclasses
import json

import pytest

import jaxcook
from jaxcook.rl.envs.arithmetic import ArithmeticDatasetBuilder
from jaxcook.rl.envs.registry import EnvSpecError, get_env_builder
from jaxcook.runs import RunRegistry

BUILT: list[str] = []


@dataclasses.dataclass(frozen=True, kw_only=True)
class MyArithmetic(ArithmeticDatasetBuilder):
    """A user's own env builder (outside the registry); it notes each build."""

    label: str = "mine"

    async def __call__(self):
        BUILT.append(self.label)
        return await super().__call__()


def write_chats(path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            messages = [
                {"role": "user", "content": f"What is {i} + 1?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")


def test_epochs_without_max_steps_runs_every_batch_of_every_epoch_on_the_users_file(tmp_path):
    data = tmp_path / "chats.jsonl"
    write_chats(data, 14)
    # tiny(): batch_size 4 -> 14 // 4 = 3 batches per epoch (no test split in a plain file), so
    # epochs=2 is 6 steps although tiny() sets max_steps=4; its reasoning-gym options are dropped.
    result = jaxcook.run("supervised", tiny=True, dataset=str(data), epochs=2, log_dir=str(tmp_path / "run"))
    train = [r for r in result.metrics if "train/loss" in r]
    assert [r["step"] for r in train] == [0, 1, 2, 3, 4, 5]
    assert [r["progress/epoch"] for r in train] == [0, 0, 0, 1, 1, 1]
    assert result.final_checkpoint.endswith("checkpoints/6")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["dataset"], config["dataset_options"], config["max_steps"]) == (str(data), {}, None)


def test_rl_takes_the_users_env_class_as_an_object(tmp_path):
    BUILT.clear()
    result = jaxcook.run(
        "reinforcement",
        tiny=True,
        env=MyArithmetic,
        env_options={"n_test_problems": 2, "few_shot": 1, "label": "from-python"},
        max_steps=1,
        log_dir=str(tmp_path / "run"),
    )
    assert BUILT == ["from-python"]
    assert any("env/all/reward/total" in r for r in result.metrics)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["env"] == "tests.workflows.test_entry_point:MyArithmetic"


def test_env_import_path_and_configured_builders():
    cfg = jaxcook.make_config("rl", overrides=["env=tests.workflows.test_entry_point:MyArithmetic"])
    assert cfg.env is MyArithmetic and cfg.env_options == {}  # the arithmetic options were dropped
    built = get_env_builder("tests.workflows.test_entry_point:MyArithmetic", group_size=3, label="x")
    assert isinstance(built, MyArithmetic) and (built.group_size, built.label) == (3, "x")
    # a configured builder keeps its own fields; the run's options replace the ones it has
    configured = get_env_builder(MyArithmetic(label="kept", n_test_problems=5), group_size=2, seed=7)
    assert (configured.label, configured.n_test_problems, configured.group_size, configured.seed) == (
        "kept",
        5,
        2,
        7,
    )
    with pytest.raises(EnvSpecError, match="env 'no_such_pkg.envs:Env': cannot import no_such_pkg.envs"):
        get_env_builder("no_such_pkg.envs:Env")
    with pytest.raises(
        EnvSpecError, match="unknown env 'arithmetc'; registered envs: arithmetic, calculator"
    ):
        get_env_builder("arithmetc")
    with pytest.raises(TypeError, match=r"MyArithmetic \('MyArithmetic'\) has no option \['colour'\]"):
        get_env_builder(MyArithmetic, colour="red")


def test_distill_uses_a_named_teacher_model_as_is_without_training_one(tmp_path):
    log_dir = tmp_path / "run"
    result = jaxcook.run(
        "distillation",
        tiny=True,
        teacher_model="tiny-random-smollm2",
        max_steps=1,
        n_eval_prompts=2,
        log_dir=str(log_dir),
    )
    assert not (log_dir / "teacher_sft").exists()
    teacher = json.loads((log_dir / "distill_config.json").read_text())["datasets"][0]["teacher"]["model"]
    assert (teacher["name"], teacher["lora"], teacher["load_checkpoint"]) == (
        "tiny-random-smollm2",
        None,
        None,
    )
    assert "test/teacher_kl" in result.metrics[0] and "test/teacher_kl" in result.metrics[-1]
    with RunRegistry.open() as reg:
        assert [r["recipe"] for r in reg.runs()] == ["distill"]  # no SFT teacher was trained
