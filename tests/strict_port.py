"""A backend that exposes only the ports: every client is wrapped in a proxy that forwards the
methods of its `jaxcook.ports` protocol and raises `AttributeError` (naming the attribute) on
anything else, and records the attempt, so a `getattr(x, name, default)` cannot hide it. It
also records every training and sampling client it hands out and whether `close` was called."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

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


@dataclass
class Opened:
    """One client the strict backend handed out: `origin` is the call that made it."""

    origin: str
    closed: bool = False


@dataclass
class Ledger:
    """What the strict backend saw: attributes asked of a port that it lacks, and every client."""

    violations: list[str] = field(default_factory=list)
    clients: list[Opened] = field(default_factory=list)

    def unclosed(self) -> list[str]:
        return [c.origin for c in self.clients if not c.closed]


class StrictProxy:
    def __init__(self, target, protocol, ledger: Ledger, opened: Opened | None = None):
        object.__setattr__(self, "_strict", (target, protocol, port_methods(protocol), ledger, opened))

    def __getattribute__(self, name):
        if name.startswith("__") and name.endswith("__"):
            return object.__getattribute__(self, name)
        target, protocol, allowed, ledger, opened = object.__getattribute__(self, "_strict")
        if name not in allowed:
            ledger.violations.append(f"{protocol.__name__}.{name}")
            raise AttributeError(f"{name!r} is not a method of the port {protocol.__name__}")
        method = getattr(target, name)
        if name == "close" and opened is not None:

            def close():
                method()
                opened.closed = True

            return close
        wrap = RESULTS.get(name)
        if wrap is None:
            return method

        def make(*args, **kwargs):
            record = Opened(f"{protocol.__name__}.{name}")
            client = StrictProxy(method(*args, **kwargs), wrap, ledger, record)
            ledger.clients.append(record)
            return client

        return make

    def __setattr__(self, name, value):
        _, protocol, _, ledger, _ = object.__getattribute__(self, "_strict")
        ledger.violations.append(f"{protocol.__name__}.{name} (set)")
        raise AttributeError(f"cannot set {name!r} on a {protocol.__name__} port")


def install(monkeypatch) -> Ledger:
    """Register the strict backend; returns the ledger its proxies record into."""
    ledger = Ledger()

    def make(**options):
        from jaxcook.backends.local import LocalService

        return StrictProxy(LocalService(**options), ports.ServiceClient, ledger)

    monkeypatch.setitem(BACKENDS, STRICT, make)
    return ledger


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
