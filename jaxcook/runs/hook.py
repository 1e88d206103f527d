"""The one place runs are registered: `jaxcook.run_config` wraps every recipe's `main` in `recorded`.

    with recorded("sft", cfg) as record:
        result = module.main(cfg)
        record.finished(result)

At the start the run is added as `running` with its config, base model, data source and parents
(start weights, teacher); a rerun in the same log dir (a resume) continues the same run unless
the log dir is deleted first (`run.if_log_dir_exists=delete`). A recipe that fills in its config
as it goes (distill picks or trains its teacher first) reports the config it ran with through
`resolved_config(cfg)`. At the end its checkpoints are added with their sha256, and final and
best metrics are stored; an exception marks it `failed`.

A registry that cannot be written never stops a training run: the problem is logged as a warning.
"""

from __future__ import annotations

import contextvars
import logging
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path

from jaxcook.runs.facts import (
    base_model_of,
    checkpoint_sha256,
    checkpoints_of,
    dataset_of,
    log_dir_exists,
    normalize_path,
    parents_of,
    summarize,
)
from jaxcook.runs.registry import RegistryError, RunRegistry

log = logging.getLogger(__name__)

REGISTRY_ERRORS = (sqlite3.Error, RegistryError, OSError)
_CURRENT: contextvars.ContextVar[Record | None] = contextvars.ContextVar("jaxcook_run", default=None)


def log_dir_of(config: dict) -> str | None:
    run = config.get("run")
    value = run.get("log_dir") if isinstance(run, dict) else config.get("log_dir")
    return normalize_path(value) if isinstance(value, str) else None


class Record:
    """The registry entry of the run in progress (a no-op when there is no registry)."""

    def __init__(self, registry: RunRegistry | None, run_id: str | None, log_dir: str | None):
        self.registry, self.run_id, self.log_dir = registry, run_id, log_dir

    def finished(self, result) -> None:
        if self.registry is None:
            return
        try:
            final = normalize_path(result.final_checkpoint) if result.final_checkpoint else None
            for step, path in checkpoints_of(self.log_dir or result.log_dir):  # a folder or a URL
                if path != final:
                    self.registry.add_checkpoint(
                        self.run_id, path, step=step, sha256=checkpoint_sha256(path), final=False
                    )
            if final is not None:
                name = Path(final).name
                step = int(name) if name.isdigit() else None
                self.registry.add_checkpoint(
                    self.run_id, final, step=step, sha256=checkpoint_sha256(final), final=True
                )
            final_metrics, best = summarize(result.metrics)
            self.registry.finish(self.run_id, final_metrics=final_metrics, best_metrics=best)
        except REGISTRY_ERRORS as e:
            log.warning("could not record run %s in the registry: %s", self.run_id, e)

    def resolved(self, cfg) -> None:
        if self.registry is None:
            return
        from jaxcook.config import config_to_dict

        config = config_to_dict(cfg)
        try:
            self.registry.update(
                self.run_id, config=config, base_model=base_model_of(config), dataset=dataset_of(config)
            )
            self.registry.set_parents(self.run_id, parents_of(config))
        except REGISTRY_ERRORS as e:
            log.warning("could not record run %s in the registry: %s", self.run_id, e)

    def failed(self, error: BaseException) -> None:
        if self.registry is None:
            return
        try:
            self.registry.fail(self.run_id, f"{type(error).__name__}: {error}")
        except REGISTRY_ERRORS as e:
            log.warning("could not record run %s in the registry: %s", self.run_id, e)


@contextmanager
def recorded(recipe: str, cfg):
    """Register the run of `recipe` with config `cfg` (a dataclass) for the duration of the block."""
    from jaxcook.config import config_to_dict

    config = config_to_dict(cfg)
    log_dir = log_dir_of(config)
    registry, run_id = None, None
    if _is_lead_process():
        try:
            registry = RunRegistry.open()
            if registry is not None:
                run_id = registry.start(
                    recipe=recipe,
                    config=config,
                    log_dir=log_dir,
                    base_model=base_model_of(config),
                    dataset=dataset_of(config),
                    parents=parents_of(config),
                    run_id=_resumed_run(registry, recipe, log_dir, config),
                )
        except REGISTRY_ERRORS as e:
            log.warning("run registry unavailable, this run is not recorded: %s", e)
            registry = None
    record = Record(registry, run_id, log_dir)
    token = _CURRENT.set(record)
    try:
        yield record
    except BaseException as e:
        record.failed(e)
        raise
    finally:
        _CURRENT.reset(token)
        if registry is not None:
            registry.close()


def resolved_config(cfg) -> None:
    """Record `cfg` (a dataclass) as the config the current run really runs with (its lineage
    follows: a teacher checkpoint chosen or trained inside the recipe); nothing outside a run."""
    record = _CURRENT.get()
    if record is not None:
        record.resolved(cfg)


def _resumed_run(registry: RunRegistry, recipe: str, log_dir: str | None, config: dict) -> str | None:
    """The id of the run this one resumes: the newest one of `recipe` in `log_dir`, unless the
    log dir is to be deleted."""
    run = config.get("run")
    policy = run.get("if_log_dir_exists") if isinstance(run, dict) else config.get("log_dir_behavior")
    if log_dir is None or policy == "delete" or not log_dir_exists(log_dir):
        return None
    previous = registry.runs(recipe=recipe, log_dir=log_dir)
    return previous[0]["id"] if previous else None


def _is_lead_process() -> bool:
    """Only process 0 of a multi-host run (`jax.distributed` initialised) writes the registry; the
    check never initialises a JAX backend itself (that must wait for `jax.distributed.initialize`)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return True
    try:
        return not jax.distributed.is_initialized() or jax.process_index() == 0
    except Exception:  # an older jax without is_initialized: a single process
        return True
