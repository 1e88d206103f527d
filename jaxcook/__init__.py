"""jaxcook: JAX-native post-training (SFT, RL, DPO, distillation, LoRA on Flax NNX).

    import jaxcook
    result = jaxcook.run("sft", tiny=True, learning_rate=3e-4, lora_rank=8)
    result = jaxcook.run("sft", dataset="chats.jsonl", epochs=3, **{"model.lora.rank": 16})

Importing `jaxcook` stays light (no JAX): `run`, `make_config`, `run_config` and `RunResult` load
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "run": "jaxcook.runner",
    "make_config": "jaxcook.runner",
    "run_config": "jaxcook.runner",
    "RunResult": "jaxcook.run_result",
}

__all__ = ["RunResult", "__version__", "make_config", "run", "run_config"]

if TYPE_CHECKING:
    from jaxcook.run_result import RunResult
    from jaxcook.runner import make_config, run, run_config


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxcook' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
