"""`jaxcook.run`: one call per recipe, the same from a notebook and from `scripts/train.py`.

    result = jaxcook.run("sft", tiny=True, learning_rate=3e-4, lora_rank=8, epochs=2)
    result = jaxcook.run("sft", **{"model.lora.rank": 8, "run.log_dir": "/tmp/run"})
    result = jaxcook.run("supervised", model={"lora": {"rank": 8}}, dataset="chats.jsonl")

Short names (`model`, `dataset`, `learning_rate`, `lora_rank`, `epochs`, `batch_size`,
`max_length`, `log_dir`; see `jaxcook.config_aliases`) and the long dotted keys both work.

`make_config` builds the config without running it (to inspect or tweak it first), and
`run_config` runs a ready config; `run` is the two in a row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from jaxcook.config import apply_overrides
from jaxcook.run_result import RunResult

__all__ = ["RunResult", "make_config", "run", "run_config"]


def make_config(recipe: str, *, tiny: bool = False, overrides: Sequence[str] | Mapping[str, Any] = ()):
    """The recipe's `Config()` (or `tiny()`) with `overrides` applied (see `jaxcook.config`)."""
    from jaxcook.recipes import get_recipe, recipe_aliases  # the recipes import jaxcook: loaded on demand

    module = get_recipe(recipe)
    cfg = module.tiny() if tiny else module.Config()
    if not isinstance(cfg, module.Config):
        raise TypeError(f"{module.__name__}.tiny() returned {type(cfg).__name__}, not its Config")
    return apply_overrides(cfg, overrides, aliases=recipe_aliases(module, cfg))


def run_config(recipe: str, cfg) -> RunResult:
    """Run `recipe`'s `main` on a config built by `make_config` (or a `dataclasses.replace` of one).

    The run is recorded in the run registry (`jaxcook.runs`) at its start and end.
    """
    from jaxcook.recipes import TASK_ALIASES, get_recipe
    from jaxcook.runs.hook import recorded

    module = get_recipe(recipe)
    if not (dataclasses.is_dataclass(cfg) and isinstance(cfg, module.Config)):
        raise TypeError(f"recipe {recipe!r} expects a {module.__name__}.Config, got {type(cfg).__name__}")
    from jaxcook.event_loop import call_blocking

    with recorded(TASK_ALIASES.get(recipe, recipe), cfg) as record:
        result = call_blocking(module.main, cfg)  # off the running event loop of a notebook, if any
        if not isinstance(result, RunResult):
            raise TypeError(
                f"{module.__name__}.main returned {type(result).__name__}, not a jaxcook.RunResult"
            )
        record.finished(result)
    return dataclasses.replace(result, run_id=record.run_id) if record.run_id else result


def run(recipe: str, *, tiny: bool = False, **overrides: Any) -> RunResult:
    """Run a recipe by name (or dotted module path) with keyword overrides of its config.

    Keys may be short names (`lora_rank=8`), dotted (`**{"model.lora.rank": 8}`) or nested dicts
    (`model={"lora": {"rank": 8}}`); values are checked against the config's annotations.
    `tiny=True` starts from the recipe's smoke-test variant.
    """
    return run_config(recipe, make_config(recipe, tiny=tiny, overrides=overrides))
