"""Backends: the one place a workflow's `ServiceClient` is chosen, by name.

    service = make_service("local", max_length=256, batch_size=8, seed=0)
    client = service.create_lora_training_client("smollm2-135m-instruct", rank=32)

Every recipe carries the name as `model.backend` (default `local`). The options are the shape
hints a backend may use (the local one sizes its buckets and mesh with them); a backend ignores
those it does not need.
"""

from __future__ import annotations

from typing import Any


def _local(**options: Any):
    from jaxcook.backends.local import LocalService

    return LocalService(**options)


BACKENDS = {"local": _local}


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(sorted(BACKENDS))}")


def make_service(name: str, **options: Any):
    """The `ServiceClient` of backend `name`, made with `options` (see `LocalService`)."""
    check_backend(name)
    return BACKENDS[name](**options)
