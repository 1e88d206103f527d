"""Typed config overrides: parsing by annotation, nested keys, errors, and the dict round trip."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from jaxcook.config import (
    OverrideError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    describe,
    field_paths,
    parse_override,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class BaseEnv:
    pass


class GridEnv(BaseEnv):
    pass


@dataclass(frozen=True, kw_only=True)
class Lora:
    rank: int = 32
    alpha: float | None = None
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self):
        if self.rank <= 0:
            raise ValueError(f"rank must be positive, got {self.rank}")


@dataclass(frozen=True, kw_only=True)
class Eval:
    every: int = 10
    name: str = "test"


@dataclass(frozen=True, kw_only=True)
class Cfg:
    learning_rate: float = 1e-4
    steps: int = 100
    use_x: bool = False
    schedule: Literal["linear", "cosine"] = "linear"
    renderer: str | None = None
    max_steps: int | None = None
    color: Color = Color.RED
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    betas: tuple[float, float] = (0.9, 0.95)
    weights: dict[str, float] = field(default_factory=dict)
    path: Path = Path("/tmp/run")
    lora: Lora = field(default_factory=Lora)
    eval: Eval | None = None
    loss_fn: Callable[[float], float] | None = None
    env: type[BaseEnv] = BaseEnv


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("learning_rate=3e-4", "learning_rate", 3e-4),
        ("learning_rate=2", "learning_rate", 2.0),
        ("steps=12", "steps", 12),
        ("steps=1e3", "steps", 1000),  # integral float notation is accepted for ints
        ("use_x=true", "use_x", True),
        ("use_x=1", "use_x", True),
        ("use_x=FALSE", "use_x", False),
        ("use_x=0", "use_x", False),
        ("schedule=cosine", "schedule", "cosine"),
        ("renderer=qwen3", "renderer", "qwen3"),
        ("renderer=none", "renderer", None),
        ("max_steps=null", "max_steps", None),
        ("max_steps=7", "max_steps", 7),
        ("color=blue", "color", Color.BLUE),
        ("color=BLUE", "color", Color.BLUE),
        ("sizes=3,4", "sizes", [3, 4]),
        ("sizes=[5]", "sizes", [5]),
        ("sizes=", "sizes", []),
        ("betas=0.8,0.99", "betas", (0.8, 0.99)),
        ("betas=[0.5, 1]", "betas", (0.5, 1.0)),
        ('weights={"a": 1}', "weights", {"a": 1.0}),
        ("path=/data/x", "path", Path("/data/x")),
        ("loss_fn=math:sqrt", "loss_fn", math.sqrt),
        ("env=tests.test_config:GridEnv", "env", GridEnv),
    ],
)
def test_string_values_are_parsed_by_annotation(text, key, expected):
    value = getattr(apply_overrides(Cfg(), [text]), key)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(value, list | tuple):
        assert [type(v) for v in value] == [type(v) for v in expected]


def test_nested_keys_and_original_untouched():
    cfg = Cfg()
    new = apply_overrides(cfg, ["lora.rank=16", "lora.alpha=0.5", "lora.targets=q,k,v", "steps=3"])
    assert new.lora == Lora(rank=16, alpha=0.5, targets=("q", "k", "v"))
    assert new.steps == 3
    assert cfg == Cfg()  # frozen: a copy was returned


def test_later_override_wins():
    assert apply_overrides(Cfg(), ["steps=1", "steps=2"]).steps == 2


def test_optional_nested_dataclass_starts_from_defaults_and_can_be_reset():
    cfg = apply_overrides(Cfg(), ["eval.every=5"])
    assert cfg.eval == Eval(every=5, name="test")
    assert apply_overrides(cfg, ["eval=none"]).eval is None
    assert apply_overrides(Cfg(), ["lora.alpha=none"]).lora.alpha is None


def test_value_after_first_equals_sign_is_kept():
    assert parse_override("renderer=a=b") == ("renderer", "a=b")
    with pytest.raises(OverrideError, match="key=value"):
        parse_override("steps")


def test_unknown_key_lists_every_valid_dotted_key():
    with pytest.raises(OverrideError) as err:
        apply_overrides(Cfg(), ["lora.rnk=3"])
    message = str(err.value)
    assert "'lora.rnk'" in message and "Did you mean lora.rank" in message
    for path in field_paths(Cfg()):
        assert path in message
    expected = {"lora.rank", "lora.targets", "eval.every", "eval.name", "learning_rate"}
    assert expected <= set(field_paths(Cfg()))


def test_key_below_a_non_dataclass_field_is_unknown():
    with pytest.raises(OverrideError, match="unknown config key 'steps.x'"):
        apply_overrides(Cfg(), ["steps.x=1"])


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("steps=abc", ["steps", "expected int", "'abc'"]),
        ("steps=1.5", ["steps", "expected int", "'1.5'", "not an integer"]),
        ("use_x=maybe", ["use_x", "expected bool", "true/false"]),
        ("schedule=step", ["schedule", "'step'", "allowed: 'linear', 'cosine'"]),
        ("color=green", ["color", "'green'", "RED, BLUE"]),
        ("max_steps=many", ["max_steps", "expected int | None", "'many'"]),
        ("betas=0.9", ["betas", "tuple[float, float]", "needs 2 items"]),
        ("weights={bad", ["weights", "invalid JSON"]),
        ("lora=3", ["lora", "expected Lora", "'3'"]),
        ("loss_fn=math:nope", ["loss_fn", "has no attribute nope"]),
    ],
)
def test_bad_value_names_key_type_and_value(text, fragments):
    with pytest.raises(OverrideError) as err:
        apply_overrides(Cfg(), [text])
    for fragment in fragments:
        assert fragment in str(err.value)


def test_validation_error_of_the_dataclass_names_the_key():
    with pytest.raises(OverrideError, match=r"lora\.rank: .*rank must be positive, got 0"):
        apply_overrides(Cfg(), ["lora.rank=0"])


def test_mapping_overrides_take_python_values():
    cfg = apply_overrides(
        Cfg(),
        {
            "lora": {"rank": 8},
            "eval.every": 3,
            "learning_rate": 1,  # an int for a float field becomes a float
            "steps": 5.0,  # an integral float for an int field becomes an int
            "max_steps": "none",  # a string where an int is expected is parsed as on the command line
            "renderer": "none",  # but a string for a str field is kept as given
            "betas": [0.1, 0.2],
            "path": "/x",
            "env": GridEnv,
        },
    )
    assert cfg.lora == Lora(rank=8)
    assert cfg.eval == Eval(every=3)
    assert cfg.learning_rate == 1.0 and type(cfg.learning_rate) is float
    assert cfg.steps == 5 and type(cfg.steps) is int
    assert cfg.max_steps is None and cfg.renderer == "none"
    assert cfg.betas == (0.1, 0.2) and cfg.path == Path("/x") and cfg.env is GridEnv
    assert apply_overrides(Cfg(), {"lora": Lora(rank=2)}).lora == Lora(rank=2)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"steps": True}, "steps: expected int, got True"),
        ({"steps": 2.5}, "steps: expected int, got 2.5"),
        ({"use_x": "perhaps"}, "use_x: expected bool"),
        ({"schedule": "step"}, "allowed: 'linear', 'cosine'"),
        ({"env": int}, "env: expected type[BaseEnv]"),
        ({"lora": 5}, "lora: expected Lora"),
        ({"lora": {"rnk": 1}}, "unknown config key 'lora.rnk'"),
    ],
)
def test_mapping_overrides_are_type_checked(overrides, fragment):
    with pytest.raises(OverrideError) as err:
        apply_overrides(Cfg(), overrides)
    assert fragment in str(err.value)


def test_config_dict_round_trip_through_json():
    cfg = apply_overrides(
        Cfg(),
        ["color=blue", "eval.every=4", "betas=0.5,0.6", 'weights={"a": 2}', "loss_fn=math:sqrt"]
        + ["lora.rank=7"],
    )
    as_dict = config_to_dict(cfg)
    assert as_dict["color"] == "blue" and as_dict["betas"] == [0.5, 0.6]
    assert as_dict["lora"] == {"rank": 7, "alpha": None, "targets": ["q", "v"]}
    assert as_dict["loss_fn"] == "math:sqrt" and as_dict["env"] == "tests.test_config:BaseEnv"
    assert config_from_dict(Cfg, json.loads(json.dumps(as_dict))) == cfg


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(OverrideError, match="unknown config key 'lora.size'"):
        config_from_dict(Cfg, {"lora": {"size": 1}})


def test_describe_has_a_line_per_key_with_type_and_value():
    lines = describe(apply_overrides(Cfg(), ["lora.rank=16"]))
    assert len(lines) == len(field_paths(Cfg()))
    assert "eval" in field_paths(Cfg())  # settable itself (to none) while it is None
    assert "lora.rank: int = 16" in lines
    assert "schedule: Literal['linear', 'cosine'] = 'linear'" in lines
    assert "max_steps: int | None = None" in lines
    assert "eval: Eval | None = None" in lines and "eval.every: int = 10" in lines
