"""Weights & Biases logging, used only when a run sets `wandb_project` (wandb is not a dependency).

The wandb run id is kept in `log_dir/wandb_run_id`, so a resumed run keeps logging into the same
wandb run (`resume="allow"`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RUN_ID_FILE = "wandb_run_id"


class WandbLogger:
    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        project: str,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        try:
            wandb = importlib.import_module("wandb")
        except ImportError as e:
            raise RuntimeError(
                f"wandb_project={project!r} is set but the wandb package is not installed: "
                f"`pip install wandb` (or `pip install jaxcook[wandb]`), or leave wandb_project unset"
            ) from e
        log_dir = Path(log_dir)
        id_file = log_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else wandb.util.generate_id()
        self._run = wandb.init(
            project=project,
            name=name,
            id=run_id,
            resume="allow",
            dir=str(log_dir),
            config=dict(config) if config is not None else None,
        )
        id_file.write_text(run_id + "\n")

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        self._run.log(dict(metrics), step=step)

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        self._run.finish()
