"""Values of annotated config fields: a command-line string parsed by its annotation, a Python value
checked against it, and a config dataclass built from a dict.

The rules by annotation are listed in `jaxcook.config`, which applies them key by key.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import math
import numbers
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal, Union

_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


class OverrideError(ValueError):
    """A config override names an unknown key or gives a value that does not fit the field's type."""


def coerce_value(hint, value, key: str, from_cli: bool):
    """`value` as the annotated type, or OverrideError naming key, expected type and value."""
    try:
        if from_cli:
            return _parse(hint, value)
        return _check(hint, value)
    except _Mismatch as e:
        detail = f" ({e.args[0]})" if e.args and e.args[0] else ""
        raise OverrideError(f"{key}: expected {type_name(hint)}, got {value!r}{detail}") from None


class _Mismatch(Exception):
    pass


def _parse(hint, text: str):
    """Parse a command-line string as `hint`."""
    if not isinstance(text, str):
        return _check(hint, text)
    if hint is Any or hint is str:
        return text
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if type(None) in args and text.strip().lower() in _NONE_WORDS:
            return None
        # str last: "3" for `int | str` is the int.
        members = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
        details = []
        for arg in members:
            try:
                return _parse(arg, text)
            except _Mismatch as e:
                details.append(e.args[0] if e.args else "")
        raise _Mismatch(details[0] if len(details) == 1 else "")
    if origin is Literal:
        for allowed in args:
            if text == str(allowed) or (isinstance(allowed, bool) and text.lower() == str(allowed).lower()):
                return allowed
        raise _Mismatch(f"allowed: {', '.join(repr(a) for a in args)}")
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise _Mismatch("use true/false/1/0")
    if hint is int:
        return _as_int(text)
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise _Mismatch("") from None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _as_enum(hint, text)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return hint(text)
    if origin in (tuple, list) or origin is Sequence or hint in (tuple, list):
        return _check(hint, _split_sequence(text))
    if origin is dict or origin is Mapping or hint is dict:
        return _check(hint, _json(text))
    if _is_callable_hint(hint):
        return _check(hint, _import_ref(text))
    if dataclasses.is_dataclass(hint):
        raise _Mismatch("set its fields with dotted keys")
    raise _Mismatch(f"cannot parse {type_name(hint)} from a string")


def _check(hint, value):
    """Check (and lightly convert) a Python value against `hint`."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch("")
        non_none = [a for a in args if a is not type(None)]
        for arg in non_none:  # a value that already fits one member wins over parsing
            if _fits(arg, value):
                return _check(arg, value)
        if isinstance(value, str):
            return _parse(hint, value)
        details = []
        for arg in non_none:
            try:
                return _check(arg, value)
            except _Mismatch as e:
                details.append(e.args[0] if e.args else "")
        raise _Mismatch(details[0] if len(details) == 1 else "")
    if isinstance(value, str) and hint is not str and not _fits(hint, value):
        return _parse(hint, value)
    if origin is Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        raise _Mismatch(f"allowed: {', '.join(repr(a) for a in args)}")
    if hint is bool:
        if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
            return bool(value)
        raise _Mismatch("")
    if hint is int:
        return _as_int(value)
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch("")
    if hint is str:
        if isinstance(value, (str, PurePath)):  # a Path for a str field (log_dir=Path(...)) is fine
            return str(value)
        raise _Mismatch("")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _as_enum(hint, value)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        if isinstance(value, (str, PurePath)):
            return hint(value)
        raise _Mismatch("")
    if origin in (tuple, list) or origin is Sequence or hint in (tuple, list):
        return _check_sequence(hint, origin or hint, args, value)
    if origin is dict or origin is Mapping or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch("")
        key_t, val_t = args if args else (Any, Any)
        return {_check(key_t, k): _check(val_t, v) for k, v in value.items()}
    if _is_callable_hint(hint):
        if origin is type or hint is type:
            ok = isinstance(value, type) and (not args or args[0] is Any or _issubclass(value, args[0]))
        else:
            ok = callable(value)
        if not ok:
            raise _Mismatch("")
        return value
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            return build_dataclass(hint, value, "")
        try:
            ok = isinstance(value, hint)
        except TypeError:  # a Protocol that is not runtime-checkable: nothing to check
            ok = True
        if not ok:
            raise _Mismatch("")
        return value
    return value  # an annotation we cannot check (a TypeVar, a string forward reference)


def _fits(hint, value) -> bool:
    """Whether `value` already is of type `hint` (no parsing)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    check = origin or hint
    if isinstance(check, type):
        try:
            return isinstance(value, check)
        except TypeError:
            return False
    return False


def _check_sequence(hint, container, args, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _Mismatch("")
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _Mismatch(f"needs {len(args)} items")
        return tuple(_check(a, v) for a, v in zip(args, value))
    item_t = args[0] if args else Any
    items = [_check(item_t, v) for v in value]
    return items if container is list else tuple(items)


def _as_int(value) -> int:
    if isinstance(value, bool):
        raise _Mismatch("")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            value = float(value)
        except ValueError:
            raise _Mismatch("") from None
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise _Mismatch("not an integer")


def _as_enum(cls, value):
    if isinstance(value, cls):
        return value
    for member in cls:
        if value == member.name or value == member.value or str(value) == str(member.value):
            return member
    raise _Mismatch(f"allowed: {', '.join(m.name for m in cls)}")


def _split_sequence(text: str):
    stripped = text.strip()
    if stripped.startswith(("[", "(")):
        return _json("[" + stripped[1:-1] + "]" if stripped.startswith("(") else stripped)
    if not stripped:
        return []
    return [item.strip() for item in stripped.split(",")]


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _Mismatch(f"invalid JSON: {e}") from None


def _is_callable_hint(hint) -> bool:
    origin = typing.get_origin(hint)
    base = origin or hint
    return base is type or base is Callable or getattr(base, "__name__", None) == "Callable"


def _issubclass(value, cls) -> bool:
    try:
        return issubclass(value, cls)
    except TypeError:
        return True


def _import_ref(text: str):
    """'package.module:attr' (or 'package.module.attr') -> the object."""
    module_name, sep, attr = text.partition(":")
    if not sep:
        module_name, _, attr = text.rpartition(".")
    if not module_name or not attr:
        raise _Mismatch("give 'package.module:name'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise _Mismatch(f"cannot import {module_name}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _Mismatch(f"{module_name} has no attribute {attr}")
        obj = getattr(obj, part)
    return obj


def type_name(hint) -> str:
    """A short readable name of an annotation: `int | None`, `Literal['a', 'b']`, `tuple[int, ...]`."""
    if hint is Any:
        return "Any"
    if hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        if origin is Callable or name == "Callable":
            return "Callable"
        if args:
            return f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
        return name
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return f"{hint.__name__}({'|'.join(str(m.value) for m in hint)})"
    return getattr(hint, "__name__", str(hint))


def init_fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def field_hints(cls) -> dict[str, Any]:
    """Resolved annotations of `cls`'s fields; one that cannot be resolved counts as Any."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        pass
    resolved = {}
    for f in dataclasses.fields(cls):
        if not isinstance(f.type, str):
            resolved[f.name] = f.type
            continue
        module = sys.modules.get(cls.__module__)
        try:
            resolved[f.name] = eval(f.type, vars(module) if module else {}, dict(vars(typing)))  # noqa: S307
        except Exception:
            resolved[f.name] = Any
    return resolved


def dataclass_in(hint):
    """The dataclass in `hint` (`X` or `X | None`), or None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(found) == 1:
            return found[0]
    return None


def named_section(hint, value):
    """The dataclass of `hint` when `value` is a string that names it: the class declares a
    `NAME_FIELD` (`BackendConfig`: "tinker" is `BackendConfig(name="tinker")`), else None."""
    cls = dataclass_in(hint)
    if cls is not None and isinstance(value, str) and getattr(cls, "NAME_FIELD", None):
        return cls
    return None


def build_dataclass(cls, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise OverrideError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    fields, hints = init_fields(cls), field_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise OverrideError(
            f"unknown config key {prefix + unknown[0]!r} for {cls.__name__}. "
            f"Valid keys: {', '.join(prefix + k for k in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        hint, key = hints[name], f"{prefix}{name}"
        sub_cls = dataclass_in(hint)
        if sub_cls is not None and isinstance(value, Mapping):
            kwargs[name] = build_dataclass(sub_cls, value, f"{key}.")
        elif named_section(hint, value) is not None:  # a config.json of before the section
            kwargs[name] = build_dataclass(sub_cls, {sub_cls.NAME_FIELD: value}, f"{key}.")
        else:
            kwargs[name] = coerce_value(hint, value, key, from_cli=False)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise OverrideError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from e
