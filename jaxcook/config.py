"""Typed overrides of frozen config dataclasses: `key=value` with dotted paths, checked against annotations.

Every config in jaxcook is a frozen, keyword-only dataclass, possibly nested (a recipe config holds a
`lora: LoraConfig`, ...). Overrides come from the command line (`lora.rank=16`, strings parsed by the
field's annotation) or from Python (`apply_overrides(cfg, {"lora": {"rank": 8}})`, values checked against it):

    cfg = apply_overrides(cfg, ["lora.rank=16", "learning_rate=3e-4", "max_steps=none"])
    cfg = apply_overrides(cfg, {"lora": {"rank": 8}, "schedule": "cosine"})

String values by annotation: `int` ("12", "1e4" if integral), `float`, `bool` (true/false/1/0/yes/no),
`str`, `X | None` ("none"/"null" -> None), `Literal[...]`, enums (name or value), `Path`,
`tuple`/`list` (JSON `[1, 2]` or a comma list `1,2`), `dict` (JSON), `Callable`/`type[...]`
("package.module:attr" is imported), and `Any` (kept as the string). A nested dataclass field is
changed key by key (`lora.rank=16`); `lora=none` sets an optional one to None, and a key under an
optional one that is None starts from that class's defaults. A section whose class declares a
`NAME_FIELD` takes a plain string as that field (`model.backend=tinker` is `model.backend.name`).

A Python value that already has the annotated type is taken as is; a string given where another type
is expected is parsed as on the command line. An unknown key is an error listing every valid key;
a bad value is an error naming the key, the expected type and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from jaxcook.config_aliases import resolve as resolve_aliases
from jaxcook.config_values import (
    OverrideError,
    build_dataclass,
    coerce_value,
    dataclass_in,
    field_hints,
    init_fields,
    named_section,
    type_name,
)

__all__ = [
    "OverrideError",
    "UnknownOptionError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "describe",
    "field_paths",
    "parse_override",
    "type_name",
]


def apply_overrides(
    cfg, overrides: Sequence[str] | Mapping[str, Any], *, aliases: Mapping[str, str] | None = None
):
    """Return a copy of the dataclass `cfg` with `overrides` applied, in order.

    `overrides` is a sequence of "dotted.key=value" strings (parsed by annotation) or a mapping from
    dotted keys to Python values (a dict value for a nested dataclass field is a mapping of its keys).
    `aliases` (a recipe's short names -> long keys, see `jaxcook.config_aliases`) rewrites short
    names first and adds what they imply (`epochs` without `max_steps` clears `max_steps`).
    """
    _require_dataclass_instance(cfg)
    if isinstance(overrides, Mapping):
        items = [(key, value, False) for key, value in overrides.items()]
    elif isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings or a mapping, not one string")
    else:
        items = [(*parse_override(text), True) for text in overrides]
    for key, _, _ in items:
        if not isinstance(key, str) or not key:
            raise OverrideError(f"override key {key!r} is not a non-empty string")
    if aliases is not None:
        items = resolve_aliases(cfg, items, aliases)
    for key, value, from_cli in items:
        try:
            cfg = _set_path(cfg, cfg, key.split("."), key, value, from_cli)
        except OverrideError as e:
            if aliases and str(e).startswith("unknown config key"):
                short = ", ".join(f"{n} ({t})" for n, t in aliases.items())
                raise OverrideError(f"{e}. Short names: {short}") from None
            raise
    return cfg


class UnknownOptionError(OverrideError, TypeError):
    """An option (`dataset_options`, `env_options`, ...) that the chosen builder does not have."""


def construct(cls, options: Mapping[str, Any], *, fixed: Mapping[str, Any] | None = None, label: str = ""):
    """`cls(**fixed, **options)` for a registry entry, with an unknown option named in the error
    together with the valid ones (`label` says which entry, e.g. the dataset name)."""
    fixed = dict(fixed or {})
    valid = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    unknown = sorted(set(options) - valid)
    if unknown:
        where = f" ({label!r})" if label else ""
        raise UnknownOptionError(f"{cls.__name__}{where} has no option {unknown}; valid: {sorted(valid)}")
    return cls(**fixed, **options)


def parse_override(text: str) -> tuple[str, str]:
    """'lora.rank=16' -> ('lora.rank', '16'); the value is everything after the first '='."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise OverrideError(f"expected an override of the form key=value, got {text!r}")
    return key.strip(), value


def field_paths(cfg_or_cls) -> list[str]:
    """Every settable dotted key of a config (leaves; nested dataclasses expanded)."""
    return [path for path, _, _, _ in _walk(_as_class(cfg_or_cls), cfg_or_cls, "")]


def describe(cfg) -> list[str]:
    """One line per settable key, `key: type = value`, for `--help` (value from `cfg`, or the default).

    A field's `metadata={"help": "..."}` is appended after `#`.
    """
    lines = []
    for path, hint, value, help_text in _walk(_as_class(cfg), cfg, ""):
        shown = "(required)" if value is dataclasses.MISSING else _show_value(value)
        line = f"{path}: {type_name(hint)} = {shown}"
        lines.append(f"{line}  # {help_text}" if help_text else line)
    return lines


def config_to_dict(cfg) -> dict[str, Any]:
    """The config as JSON-able nested dicts (enums by value, tuples as lists, callables as 'module:name')."""
    _require_dataclass_instance(cfg)
    return _to_jsonable(cfg)


def config_from_dict(cls, data: Mapping[str, Any]):
    """Build `cls` from `config_to_dict` output (inverse of it for every field type listed above)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_from_dict expects a dataclass class, got {cls!r}")
    return build_dataclass(cls, data, "")


def _set_path(root, obj, parts: list[str], key: str, value, from_cli: bool):
    name = parts[0]
    fields = init_fields(type(obj))
    if name not in fields:
        raise OverrideError(_unknown_key_message(root, key))
    hint = field_hints(type(obj))[name]
    if len(parts) == 1:
        section = named_section(hint, value)
        if section is not None:  # `model.backend=tinker`: a string sets the section's name
            current = getattr(obj, name)
            base = current if current is not None else _default_instance(section, key)
            try:
                new = dataclasses.replace(base, **{section.NAME_FIELD: value})
            except (TypeError, ValueError) as e:
                raise OverrideError(f"{key}: {e}") from e
        elif not from_cli and isinstance(value, Mapping) and dataclass_in(hint) is not None:
            current = getattr(obj, name)
            sub_cls = dataclass_in(hint)
            base = current if current is not None else _default_instance(sub_cls, key)
            new = base
            for sub_key, sub_value in value.items():
                new = _set_path(root, new, str(sub_key).split("."), f"{key}.{sub_key}", sub_value, False)
        else:
            new = coerce_value(hint, value, key, from_cli)
    else:
        sub_cls = dataclass_in(hint)
        if sub_cls is None:
            raise OverrideError(_unknown_key_message(root, key))
        current = getattr(obj, name)
        base = current if current is not None else _default_instance(sub_cls, key)
        new = _set_path(root, base, parts[1:], key, value, from_cli)
    try:
        return dataclasses.replace(obj, **{name: new})
    except (TypeError, ValueError) as e:
        raise OverrideError(f"{key}: {e}") from e


def _default_instance(cls, key: str):
    try:
        return cls()
    except TypeError as e:
        raise OverrideError(f"{key}: {cls.__name__} has required fields; give it whole ({e})") from e


def _unknown_key_message(root, key: str) -> str:
    valid = field_paths(root)
    close = difflib.get_close_matches(key, valid, n=3)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r} for {type(root).__name__}.{hint} Valid keys: {', '.join(valid)}"


def _require_dataclass_instance(cfg) -> None:
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"expected a config dataclass instance, got {cfg!r}")


def _as_class(cfg_or_cls):
    return cfg_or_cls if isinstance(cfg_or_cls, type) else type(cfg_or_cls)


def _walk(cls, obj, prefix: str):
    """Yield (dotted path, annotation, value or default or MISSING, help) for every leaf key."""
    hints = field_hints(cls)
    for name, f in init_fields(cls).items():
        path = f"{prefix}{name}"
        if obj is not None and not isinstance(obj, type):
            value = getattr(obj, name)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = dataclasses.MISSING
        sub_cls = dataclass_in(hints[name])
        if sub_cls is not None:
            sub_obj = value if dataclasses.is_dataclass(value) and not isinstance(value, type) else sub_cls
            if value is None:
                yield path, hints[name], None, f.metadata.get("help", "")
            yield from _walk(sub_cls, sub_obj, f"{path}.")
        else:
            yield path, hints[name], value, f.metadata.get("help", "")


def _show_value(value) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    if callable(value) and hasattr(value, "__qualname__"):
        return _callable_ref(value)
    return repr(value)


def _callable_ref(value) -> str:
    return f"{value.__module__}:{value.__qualname__}"


def _to_jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if callable(value) and hasattr(value, "__qualname__") and hasattr(value, "__module__"):
        return _callable_ref(value)
    return repr(value)
