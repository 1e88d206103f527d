"""Short names of config keys (`jaxcook.config_aliases`): rewriting, the rules they imply, errors,
and every registered recipe's table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

import jaxcook
from jaxcook.config import OverrideError, apply_overrides, field_paths
from jaxcook.config_aliases import SHORT_NAMES, STANDARD, aliases, check_table
from jaxcook.recipes import RECIPES, TASK_ALIASES, get_recipe, recipe_aliases


@dataclass(frozen=True, kw_only=True)
class Lora:
    rank: int = 32


@dataclass(frozen=True, kw_only=True)
class Model:
    name: str = "base"
    lora: Lora | None = Lora()


@dataclass(frozen=True, kw_only=True)
class Optim:
    learning_rate: float = 1e-4


@dataclass(frozen=True, kw_only=True)
class Run:
    log_dir: str = "runs/x"


@dataclass(frozen=True, kw_only=True)
class Cfg:
    model: Model = Model()
    dataset: str = "builtin"
    dataset_options: dict[str, Any] = field(default_factory=lambda: {"n_per_task": 12})
    num_epochs: int = 1
    max_steps: int | None = 60
    batch_size: int = 8
    max_length: int = 256
    optim: Optim = Optim()
    run: Run = Run()


TABLE = aliases()


class GridEnv:
    """A user's env builder class (any class or callable; checked when the run builds it)."""


def test_short_names_set_the_long_keys_from_the_cli_and_from_python():
    cli = apply_overrides(
        Cfg(), ["model=org/m", "lora_rank=16", "learning_rate=3e-4", "log_dir=/tmp/r"], aliases=TABLE
    )
    py = apply_overrides(
        Cfg(), {"model": "org/m", "lora_rank": 16, "learning_rate": 3e-4, "log_dir": "/tmp/r"}, aliases=TABLE
    )
    long = apply_overrides(
        Cfg(),
        {"model.name": "org/m", "model.lora.rank": 16, "optim.learning_rate": 3e-4, "run.log_dir": "/tmp/r"},
        aliases=TABLE,
    )
    assert cli == py == long
    assert long.model == Model(name="org/m", lora=Lora(rank=16)) and long.optim.learning_rate == 3e-4


def test_model_as_a_mapping_or_object_is_the_field_and_as_a_string_the_name():
    assert apply_overrides(Cfg(), {"model": {"lora": {"rank": 4}}}, aliases=TABLE).model == Model(
        lora=Lora(rank=4)
    )
    assert apply_overrides(Cfg(), {"model": Model(name="x", lora=None)}, aliases=TABLE).model.lora is None
    assert apply_overrides(Cfg(), {"model": "x"}, aliases=TABLE).model == Model(name="x")


def test_epochs_without_max_steps_runs_every_epoch():
    assert apply_overrides(Cfg(), ["epochs=3"], aliases=TABLE).max_steps is None
    assert apply_overrides(Cfg(), {"num_epochs": 3}, aliases=TABLE).max_steps is None  # the long name too
    both = apply_overrides(Cfg(), ["epochs=3", "max_steps=7"], aliases=TABLE)
    assert (both.num_epochs, both.max_steps) == (3, 7)
    # without the recipe's table (plain apply_overrides) nothing is implied
    assert apply_overrides(Cfg(), ["num_epochs=3"]).max_steps == 60


def test_a_new_dataset_drops_the_old_sources_options_unless_given():
    assert apply_overrides(Cfg(), ["dataset=my.jsonl"], aliases=TABLE).dataset_options == {}
    kept = apply_overrides(Cfg(), ["dataset=my.jsonl", 'dataset_options={"test_size": 2}'], aliases=TABLE)
    assert kept.dataset_options == {"test_size": 2}
    assert apply_overrides(Cfg(), ["dataset=builtin"], aliases=TABLE).dataset_options == {"n_per_task": 12}


def test_a_short_name_the_recipe_does_not_map_lists_the_ones_it_does():
    table = aliases(epochs=None, dataset=None)
    with pytest.raises(
        OverrideError, match=r"short name 'epochs' does not apply .*its short names: model \(model.name\)"
    ):
        apply_overrides(Cfg(), ["epochs=2"], aliases=table)


def test_short_and_long_name_of_one_key_together_is_an_error():
    with pytest.raises(OverrideError, match="'lora_rank' and 'model.lora.rank' both set model.lora.rank"):
        apply_overrides(Cfg(), ["lora_rank=4", "model.lora.rank=8"], aliases=TABLE)


def test_unknown_key_error_names_the_short_names_too():
    with pytest.raises(
        OverrideError, match=r"unknown config key 'lora.rank'.*Short names: model \(model.name\)"
    ):
        apply_overrides(Cfg(), ["lora.rank=4"], aliases=TABLE)


def test_aliases_rejects_undeclared_short_names():
    with pytest.raises(ValueError, match=r"\['rank'\] are not short names"):
        aliases(rank="model.lora.rank")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_declares_short_names_whose_long_keys_exist(name):
    module = get_recipe(name)
    assert hasattr(module, "ALIASES"), f"jaxcook/recipes/{name}.py declares no ALIASES"
    check_table(module.Config, module.ALIASES)
    paths = set(field_paths(module.Config))
    for short in ("model", "learning_rate", "lora_rank", "log_dir"):
        assert module.ALIASES[short] in paths
    # a standard short name is left out only where the recipe has no such key
    for short, target in STANDARD.items():
        if short not in module.ALIASES:
            assert target not in paths, f"{name} has {target} but no {short}="


def test_the_short_names_users_expect_work_on_sft():
    cfg = jaxcook.make_config(
        "sft",
        overrides={
            "model": "HuggingFaceTB/SmolLM2-360M-Instruct",
            "dataset": "chats.jsonl",
            "learning_rate": 2e-4,
            "lora_rank": 32,
            "epochs": 3,
            "batch_size": 4,
            "max_length": 512,
            "log_dir": "/tmp/x",
        },
    )
    assert cfg.model.name == "HuggingFaceTB/SmolLM2-360M-Instruct" and cfg.model.lora.rank == 32
    assert (cfg.dataset, cfg.dataset_options, cfg.optim.learning_rate) == ("chats.jsonl", {}, 2e-4)
    assert (cfg.num_epochs, cfg.max_steps, cfg.batch_size, cfg.max_length) == (3, None, 4, 512)
    assert cfg.run.log_dir == "/tmp/x"


def test_rl_rejects_epochs_and_distill_takes_student_model():
    with pytest.raises(OverrideError, match="short name 'epochs' does not apply"):
        jaxcook.make_config("rl", overrides={"epochs": 2})
    # DESIGN's call: jaxcook.run("rl", model=..., env=MyEnv, max_tokens=1024, batches=100)
    cfg = jaxcook.make_config(
        "rl", overrides={"model": "m", "env": GridEnv, "max_tokens": 1024, "batches": 100}
    )
    assert (cfg.model.name, cfg.env, cfg.max_tokens, cfg.max_steps) == ("m", GridEnv, 1024, 100)
    cfg = jaxcook.make_config(
        "distill", overrides={"student_model": "m", "teacher_model": "t", "dataset": "d"}
    )
    assert (cfg.model.name, cfg.teacher_model, cfg.dataset) == ("m", "t", "d")


@pytest.mark.parametrize("task, recipe", sorted(TASK_ALIASES.items()))
def test_tinker_cookbook_task_names_are_the_recipes(task, recipe):
    assert get_recipe(task) is get_recipe(recipe)
    assert recipe_aliases(get_recipe(task), jaxcook.make_config(task)) == get_recipe(recipe).ALIASES
    assert jaxcook.make_config(task) == jaxcook.make_config(recipe)


def test_every_short_name_says_what_it_means():
    assert set(STANDARD) <= set(SHORT_NAMES) and all(SHORT_NAMES.values())
