"""A run's log dir: what to do when it already exists, and the loggers that write into it.

    log_dir/
      config.json       the run's config (config_to_dict)
      metrics.jsonl     one row per step (JsonlLogger)
      logs.log          Python `logging` output of the run
      tensorboard/      event files (TensorBoardLogger)
      reports/          HTML reports of sampled rollouts (html_report)
      checkpoints/      written by the checkpoint layer, not here

A workflow calls `check_log_dir(log_dir, behavior)` first, finds the step to resume from (its last
checkpoint, 0 for a fresh run), then `setup_logging(log_dir, config, start_step=step)`, which drops
the metrics an interrupted run logged after that step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from jaxcook.logging.metrics import (
    METRICS_FILE,
    JsonlLogger,
    MetricsLogger,
    MultiplexLogger,
    truncate_metrics,
)

LogDirBehavior = Literal["resume", "delete", "raise"]
CONFIG_FILE = "config.json"
LOG_FILE = "logs.log"
# Files every run creates at its start (setup_logging): their presence is what makes a directory
# one `check_log_dir(behavior="delete")` may remove.
_RUN_MARKERS = (METRICS_FILE, LOG_FILE)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OUR_LOGGERS = ("jaxcook", "__main__")

logger = logging.getLogger(__name__)

_installed_handlers: list[logging.Handler] = []


def check_log_dir(log_dir: str | os.PathLike, behavior: LogDirBehavior = "resume") -> bool:
    """Apply `behavior` to an existing non-empty `log_dir`; return whether an earlier run's files remain.

    "resume" keeps them (the run continues from its last checkpoint), "delete" removes the directory
    (only one that holds a jaxcook run: a metrics.jsonl or logs.log), "raise" refuses to run.
    """
    if behavior not in ("resume", "delete", "raise"):
        raise ValueError(f"log dir behavior must be 'resume', 'delete' or 'raise', got {behavior!r}")
    path = Path(log_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"log dir {path} exists and is not a directory")
    if not path.exists() or not any(path.iterdir()):
        return False
    if behavior == "raise":
        raise FileExistsError(
            f"log dir {path} already holds files; pass log_dir_behavior='resume' to continue that run, "
            f"'delete' to start over, or choose another log_dir"
        )
    if behavior == "delete":
        resolved = path.resolve()
        if resolved in (Path.home().resolve(), Path(resolved.anchor), Path.cwd().resolve()) or not any(
            (path / marker).exists() for marker in _RUN_MARKERS
        ):
            raise FileExistsError(
                f"log dir {path} is not empty and does not look like a jaxcook run "
                f"(no {' or '.join(_RUN_MARKERS)}); not deleting it"
            )
        logger.info("deleting existing log dir %s", path)
        shutil.rmtree(path)
        return False
    logger.info("log dir %s exists; resuming in it", path)
    return True


def setup_logging(
    log_dir: str | os.PathLike,
    config: Mapping[str, Any] | Any,
    *,
    wandb_project: str | None = None,
    wandb_name: str | None = None,
    start_step: int = 0,
    tensorboard: bool = True,
    configure_python_logging: bool = True,
) -> MultiplexLogger:
    """Create `log_dir`, write `config.json`, and return a logger to metrics.jsonl (+ TensorBoard, + wandb).

    `config` is a dict or a config dataclass. `start_step` is the first step this run logs: rows of an
    earlier run at or after it are dropped from metrics.jsonl and hidden in TensorBoard. Python
    `logging` also goes to `log_dir/logs.log` until the returned logger is closed.
    """
    from jaxcook.config import config_to_dict
    from jaxcook.engine.distributed import is_main_process

    if not is_main_process():  # multi-host: process 0 writes the run directory, the others nothing
        return MultiplexLogger([])
    path = Path(log_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    config_dict = config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    on_close: list[Callable[[], None]] = []
    if configure_python_logging:
        on_close.append(install_log_file(path / LOG_FILE))
    _write_config(path / CONFIG_FILE, config_dict)
    dropped = truncate_metrics(path, start_step)
    if dropped:
        logger.info("resuming at step %d: dropped %d later rows from %s", start_step, dropped, METRICS_FILE)
    sinks: list[MetricsLogger] = [JsonlLogger(path)]
    if tensorboard:
        from jaxcook.logging.tensorboard import TensorBoardLogger, has_events

        sinks.append(TensorBoardLogger(path, purge_step=start_step if has_events(path) else None))
    if wandb_project:
        from jaxcook.logging.wandb_logger import WandbLogger

        sinks.append(WandbLogger(path, project=wandb_project, name=wandb_name, config=config_dict))
    multiplex = MultiplexLogger(sinks, on_close=on_close)
    multiplex.log_hparams(config_dict)
    logger.info("logging to %s", path)
    return multiplex


def install_log_file(path: str | os.PathLike, level: int = logging.INFO) -> Callable[[], None]:
    """Send Python `logging` to the file `path` (and to stderr if nothing else prints); return an undo.

    The root logger gets the handlers, so warnings of every library land in the file too; jaxcook's
    own loggers are set to `level` unless configured already. Installing again (a second run in the
    same notebook) first removes what the previous install added.
    """
    _remove(list(_installed_handlers))
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    file_handler.setLevel(level)
    added: list[logging.Handler] = [file_handler]
    root = logging.getLogger()
    if not any(
        isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in root.handlers
    ):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        console.setLevel(level)
        added.append(console)
    for handler in added:
        root.addHandler(handler)
    for name in _OUR_LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(level)
    _installed_handlers.extend(added)
    return lambda: _remove(added)


def _remove(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for handler in handlers:
        if handler in _installed_handlers:
            _installed_handlers.remove(handler)
            root.removeHandler(handler)
            handler.close()


def _write_config(path: Path, config: dict) -> None:
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            old = None
        changed = _changed_keys(old, config) if isinstance(old, dict) else ["(unreadable old config)"]
        if changed:
            logger.warning("config differs from the previous run in %s: %s", path.parent, ", ".join(changed))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _changed_keys(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changed
