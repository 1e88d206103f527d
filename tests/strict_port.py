"""A backend that exposes only the ports: every client is wrapped in a proxy that forwards the
methods of its `jaxcook.ports` protocol and raises `AttributeError` (naming the attribute) on
anything else, and records the attempt, so a `getattr(x, name, default)` cannot hide it."""

from __future__ import annotations

import dataclasses

from jaxcook import ports
from jaxcook.backends import BACKENDS
from jaxcook.workflows.common import ModelOptions

STRICT = "strict-local"


def port_methods(protocol) -> frozenset[str]:
    return frozenset(n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_"))


# method name -> the protocol its result is wrapped in
RESULTS = {
    "create_lora_training_client": ports.TrainingClient,
    "create_full_training_client": ports.TrainingClient,
    "create_training_client_from_state": ports.TrainingClient,
    "create_training_client_from_state_with_optimizer": ports.TrainingClient,
    "create_sampling_client": ports.SamplingClient,
    "save_weights_and_get_sampling_client": ports.SamplingClient,
}


class StrictProxy:
    def __init__(self, target, protocol, violations: list[str]):
        object.__setattr__(self, "_strict", (target, protocol, port_methods(protocol), violations))

    def __getattribute__(self, name):
        if name.startswith("__") and name.endswith("__"):
            return object.__getattribute__(self, name)
        target, protocol, allowed, violations = object.__getattribute__(self, "_strict")
        if name not in allowed:
            violations.append(f"{protocol.__name__}.{name}")
            raise AttributeError(f"{name!r} is not a method of the port {protocol.__name__}")
        method = getattr(target, name)
        wrap = RESULTS.get(name)
        if wrap is None:
            return method
        return lambda *args, **kwargs: StrictProxy(method(*args, **kwargs), wrap, violations)

    def __setattr__(self, name, value):
        _, protocol, _, violations = object.__getattribute__(self, "_strict")
        violations.append(f"{protocol.__name__}.{name} (set)")
        raise AttributeError(f"cannot set {name!r} on a {protocol.__name__} port")


def install(monkeypatch) -> list[str]:
    """Register the strict backend; returns the list its proxies record violations in."""
    violations: list[str] = []

    def make(**options):
        from jaxcook.backends.local import LocalService

        return StrictProxy(LocalService(**options), ports.ServiceClient, violations)

    monkeypatch.setitem(BACKENDS, STRICT, make)
    return violations


def on_strict_backend(config):
    """`config` with every `ModelOptions` in it (student, teachers, ...) on the strict backend."""
    if isinstance(config, ModelOptions):
        return dataclasses.replace(config, backend=STRICT)
    if isinstance(config, tuple):
        return tuple(on_strict_backend(c) for c in config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        changes = {
            f.name: on_strict_backend(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init
        }
        return dataclasses.replace(config, **changes)
    return config
