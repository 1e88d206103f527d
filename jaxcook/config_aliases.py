"""Short names of a recipe's most used config keys: `model=`, `dataset=`, `lora_rank=`, `epochs=`, ...

The short names are declared once, here (`SHORT_NAMES`, with what each one means). A recipe maps
the ones that make sense for it to its own dotted keys in its module (`ALIASES = aliases()` takes
`STANDARD`; `aliases(epochs=None, batch_size="groups_per_batch")` drops or moves one), and
`apply_overrides(cfg, overrides, aliases=ALIASES)` rewrites them before applying:

    jaxcook.run("sft", model="HuggingFaceTB/SmolLM2-360M-Instruct", lora_rank=16, epochs=3)
    python scripts/train.py --recipe sft lora_rank=16 learning_rate=3e-4

Rules:
- A key that is a field of the config is that field; otherwise a mapped short name is its long key,
  and a dotted key under a short name is under its long key (`backend.base_url` is
  `model.backend.base_url`).
  `model` is both a field (the `ModelOptions`) and a short name: a string is the model's name
  (`model.name`), a mapping or a `ModelOptions` is the field.
- A short name the recipe does not map is an error listing the ones it does; a short name and its
  long key in one call is an error.
- `epochs` (or its long key) without `max_steps` runs the epochs: `max_steps` becomes None.
- A new `dataset` (or `env`) without its `dataset_options` (`env_options`) drops the old options:
  they are fields of the old source's builder (a tiny variant's `n_per_task`), not of the new one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxcook.config_values import OverrideError, dataclass_in, field_hints, init_fields

SHORT_NAMES: dict[str, str] = {
    "model": "the model to train: a registry name, a Hugging Face id or a local folder",
    "student_model": "the model distillation trains (the student)",
    "dataset": "the training data: a registry name, a .jsonl file or a Hugging Face dataset",
    "learning_rate": "the peak learning rate",
    "lora_rank": "the LoRA rank",
    "epochs": "passes over the training data (without max_steps: all of them)",
    "batch_size": "examples per optimizer step",
    "max_length": "the longest training sequence, in tokens",
    "log_dir": "where the run writes its logs and checkpoints",
    "batches": "training iterations (each one batch of sampled groups)",
    "backend": "where it trains: local, or tinker (any Tinker-API service; backend.base_url=URL)",
}

STANDARD: dict[str, str] = {
    "model": "model.name",
    "dataset": "dataset",
    "learning_rate": "optim.learning_rate",
    "lora_rank": "model.lora.rank",
    "epochs": "num_epochs",
    "batch_size": "batch_size",
    "max_length": "max_length",
    "log_dir": "run.log_dir",
    "backend": "model.backend",
}

# A long key whose value says what its options key means; changing it alone resets the options.
OPTIONS_OF: dict[str, str] = {"dataset": "dataset_options", "env": "env_options"}
MAX_STEPS = "max_steps"


def aliases(**changes: str | None) -> dict[str, str]:
    """`STANDARD` with `changes`: `name="long.key"` maps (or remaps) a short name, `name=None` drops it."""
    unknown = sorted(set(changes) - set(SHORT_NAMES))
    if unknown:
        raise ValueError(f"{unknown} are not short names; declared ones: {', '.join(SHORT_NAMES)}")
    out = dict(STANDARD)
    for name, target in changes.items():
        if target is None:
            out.pop(name, None)
        else:
            out[name] = target
    return out


def default_aliases(cfg) -> dict[str, str]:
    """For a recipe that declares no `ALIASES`: the standard short names whose long key it has."""
    paths = set(_paths(type(cfg)))
    return {name: target for name, target in STANDARD.items() if target in paths}


def resolve(cfg, items: list[tuple[str, Any, bool]], table: Mapping[str, str]) -> list[tuple[str, Any, bool]]:
    """Rewrite `(key, value, from_cli)` overrides of `cfg` by `table` and add the implied ones."""
    paths = set(_paths(type(cfg)))
    fields, hints = init_fields(type(cfg)), field_hints(type(cfg))
    out, given_as = [], {}
    for key, value, from_cli in items:
        long = key
        head, dot, rest = key.partition(".")
        if dot and head in table and head not in fields:  # backend.base_url -> model.backend.base_url
            long = f"{table[head]}.{rest}"
        elif key in table and table[key] != key:
            is_field = key in fields
            nested = is_field and dataclass_in(hints[key]) is not None
            if not is_field or (nested and isinstance(value, str)):
                long = table[key]
        elif key in SHORT_NAMES and key not in paths and key not in fields:
            mapped = ", ".join(f"{n} ({t})" for n, t in table.items()) or "none"
            where = f"{type(cfg).__module__}.{type(cfg).__qualname__}"
            raise OverrideError(
                f"short name {key!r} does not apply to this recipe ({where}); its short names: {mapped}"
            )
        if long in given_as and given_as[long] != key:
            raise OverrideError(f"{given_as[long]!r} and {key!r} both set {long}: give one of them")
        given_as[long] = key
        out.append((long, value, from_cli))
    touched = {k for k, _, _ in out}

    def touches(key: str) -> bool:
        return any(t == key or t.startswith(key + ".") for t in touched)

    epochs = table.get("epochs")
    if epochs and epochs in touched and not touches(MAX_STEPS) and MAX_STEPS in paths:
        out.append((MAX_STEPS, None, False))
    for source, options in OPTIONS_OF.items():
        if source in touched and options in fields and not touches(options):
            new = [v for k, v, _ in out if k == source][-1]
            if new != getattr(cfg, source):
                out.append((options, {}, False))
    return out


def describe_aliases(table: Mapping[str, str]) -> list[str]:
    """One line per short name of a recipe for `--help`: `name -> long.key  # meaning`."""
    width = max((len(n) for n in table), default=0)
    return [f"{name:<{width}} -> {target}  # {SHORT_NAMES.get(name, '')}" for name, target in table.items()]


def check_table(cls, table: Mapping[str, str]) -> None:
    """Raise unless every short name is declared and every long key is a key of `cls`."""
    paths = set(_paths(cls))
    bad = {n: t for n, t in table.items() if n not in SHORT_NAMES or t not in paths}
    if bad:
        raise ValueError(f"{cls.__name__}: bad aliases {bad} (short names: {', '.join(SHORT_NAMES)})")


def _paths(cls, prefix: str = ""):
    hints = field_hints(cls)
    for name in init_fields(cls):
        sub = dataclass_in(hints[name])
        yield f"{prefix}{name}"
        if sub is not None and dataclasses.is_dataclass(sub):
            yield from _paths(sub, f"{prefix}{name}.")
