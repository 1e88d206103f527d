"""The recipe registry: recipe name -> module, and `get_recipe` to load one.

A recipe module defines
  - `Config`: a frozen keyword-only dataclass whose defaults run on the embedded default model,
  - `tiny() -> Config`: a small variant for smoke tests,
  - `main(cfg: Config) -> jaxcook.RunResult`,
  - optionally `ALIASES`: its short names (`lora_rank=` for `model.lora.rank`, see
    `jaxcook.config_aliases`); without it, the standard ones whose long key the config has.

The task names tinker-cookbook users know (`supervised`, `reinforcement`, `preference`,
`distillation`) name the same recipes (`TASK_ALIASES`).

`get_recipe` also takes a dotted module path (`mypackage.my_recipe`) for recipes outside this
registry, so `python scripts/train.py --recipe mypackage.my_recipe` and
`jaxcook.run("mypackage.my_recipe")` work without editing `RECIPES`.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from types import ModuleType

RECIPES: dict[str, str] = {
    "sft": "jaxcook.recipes.sft",
    "rl": "jaxcook.recipes.rl",
    "rl_multiturn": "jaxcook.recipes.rl_multiturn",
    "dpo": "jaxcook.recipes.dpo",
    "reward_model": "jaxcook.recipes.reward_model",
    "distill": "jaxcook.recipes.distill",
    "prompt_distill": "jaxcook.recipes.prompt_distill",
}

TASK_ALIASES: dict[str, str] = {
    "supervised": "sft",
    "reinforcement": "rl",
    "preference": "dpo",
    "distillation": "distill",
}

REQUIRED_ATTRIBUTES = ("Config", "tiny", "main")


class RecipeError(LookupError):
    """An unknown recipe name, a registered recipe that is not written yet, or a malformed recipe module."""


def recipe_module_path(name: str) -> str:
    """The module path of a registered recipe name (or task alias), or `name` itself when it is a
    dotted module path."""
    name = TASK_ALIASES.get(name, name)
    if name in RECIPES:
        return RECIPES[name]
    if "." in name and all(part.isidentifier() for part in name.split(".")):
        return name
    raise RecipeError(
        f"unknown recipe {name!r}; registered recipes: {', '.join(RECIPES)} "
        f"(task names: {', '.join(f'{k}={v}' for k, v in TASK_ALIASES.items())})"
    )


def is_implemented(name: str) -> bool:
    """Whether the recipe's module exists (found without importing it)."""
    try:
        return _find_spec(recipe_module_path(name)) is not None
    except RecipeError:
        return False


def get_recipe(name: str) -> ModuleType:
    """Import and check the recipe module for `name` (a registry name or a dotted module path).

    An ImportError raised *inside* an existing recipe module propagates unchanged: only a module that
    does not exist becomes a "not implemented yet" RecipeError.
    """
    path = recipe_module_path(name)
    if _find_spec(path) is None:
        if TASK_ALIASES.get(name, name) in RECIPES:
            raise RecipeError(f"recipe {name!r} is not implemented yet (no module {path})")
        raise RecipeError(f"no recipe module {path!r}; registered recipes: {', '.join(RECIPES)}")
    module = importlib.import_module(path)
    missing = [attr for attr in REQUIRED_ATTRIBUTES if not hasattr(module, attr)]
    if missing:
        raise RecipeError(
            f"recipe module {path} ({module.__file__}) lacks {', '.join(missing)}; "
            f"a recipe defines {', '.join(REQUIRED_ATTRIBUTES)}"
        )
    return module


def recipe_aliases(module: ModuleType, cfg) -> dict[str, str]:
    """The recipe's short names -> long keys: its `ALIASES`, or the standard ones its config has."""
    from jaxcook.config_aliases import default_aliases

    table = getattr(module, "ALIASES", None)
    return dict(table) if table is not None else default_aliases(cfg)


def summary(name: str) -> str:
    """The first line of the recipe module's docstring, read from source without importing it."""
    try:
        spec = _find_spec(recipe_module_path(name))
    except RecipeError:
        return ""
    if spec is None:
        return "(not implemented yet)"
    if not spec.origin or not spec.origin.endswith(".py"):
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _find_spec(path: str):
    try:
        return importlib.util.find_spec(path)
    except ModuleNotFoundError:  # a parent package is missing
        return None
