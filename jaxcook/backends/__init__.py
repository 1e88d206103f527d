"""Backends: the one place a workflow's `ServiceClient` is chosen, by a `BackendConfig`.

    service = make_service("local", max_length=256, batch_size=8, seed=0)
    service = make_service(BackendConfig(name="tinker", base_url="http://127.0.0.1:8000"), max_length=256)
    client = service.create_lora_training_client("smollm2-135m-instruct", rank=32)

Every recipe carries the section as `model.backend` (`backend=tinker backend.base_url=URL` on the
command line: `backend` is a short name of it, and a plain string sets its `name`). The options
are the shape hints a backend may use (the local one sizes its buckets and mesh with them); a
backend ignores those it does not need.

- `local`: this process's devices (`jaxcook.backends.local`).
- `tinker`: any Tinker-API service through the public `tinker` SDK (`jaxcook.backends.tinker`):
  the Tinker service itself, or `jaxcook serve` on another machine. The API key comes from the
  environment (`TINKER_API_KEY`), never from the config (which is written to the run's log dir).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class BackendError(ValueError):
    """A backend cannot be reached or used as configured (one line: what, where, what to do)."""


def _local(**options: Any):
    from jaxcook.backends.local import LocalService

    for key in ("base_url", "tokenizer"):
        if options.pop(key, None) is not None:
            raise BackendError(f"backend.{key} applies to a remote backend (backend=tinker), not to local")
    return LocalService(**options)


def _tinker(**options: Any):
    from jaxcook.backends.tinker import TinkerService

    return TinkerService(**options)


BACKENDS = {"local": _local, "tinker": _tinker}


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; valid: {', '.join(sorted(BACKENDS))}")


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """Which backend trains and samples, and where it is.

    `base_url`: the Tinker-API service (`tinker` only; None: `$TINKER_BASE_URL`, else the Tinker
    service). `tokenizer`: where the client-side tokenizer comes from (`tinker` only; None: the
    base model's name, loaded by jaxcook as the local backend would: registry names, local HF
    folders and GGUF files need no hub).
    """

    NAME_FIELD: ClassVar[str] = "name"  # `model.backend=tinker` (a plain string) sets this field

    name: str = "local"  # see BACKENDS
    base_url: str | None = None
    tokenizer: str | None = None

    def __post_init__(self):
        check_backend(self.name)

    def service_options(self) -> dict[str, Any]:
        """The options `make_service` passes on besides the shape hints (only those given)."""
        return {
            k: v for k, v in (("base_url", self.base_url), ("tokenizer", self.tokenizer)) if v is not None
        }


def make_service(backend: BackendConfig | str, **options: Any):
    """The `ServiceClient` of `backend` (a config, or a backend name), made with `options` (the
    shape hints: see `LocalService`)."""
    if isinstance(backend, str):
        check_backend(backend)
        return BACKENDS[backend](**options)
    return BACKENDS[backend.name](**backend.service_options(), **options)
