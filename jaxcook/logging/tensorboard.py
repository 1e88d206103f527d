"""TensorBoard event files (tensorboardX) under `log_dir/tensorboard/`.

On resume at step s the writer is opened with `purge_step=s`: TensorBoard then hides every event of
the earlier run at step >= s, so a resumed curve has no doubled segment.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger:
    """Scalars per step; the config as a text summary."""

    def __init__(self, log_dir: str | os.PathLike, *, purge_step: int | None = None, flush_secs: int = 30):
        SummaryWriter = _import_summary_writer()
        self.path = Path(log_dir) / TENSORBOARD_DIR
        # Event files are named by the second they were opened in and opened with "wb": a unique
        # suffix keeps a run restarted within the same second from overwriting the earlier file.
        suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._writer = SummaryWriter(
            logdir=str(self.path), purge_step=purge_step, flush_secs=flush_secs, filename_suffix=suffix
        )

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in metrics.items():
            if isinstance(value, bool | int | float):  # strings have no scalar curve
                self._writer.add_scalar(key, float(value), global_step=step)

    def log_hparams(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(config, indent=2, default=str, allow_nan=True)
        # Markdown: indent by 4 spaces so TensorBoard shows it as a code block.
        self._writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), 0)

    def close(self) -> None:
        self._writer.close()


def _import_summary_writer():
    """tensorboardX's SummaryWriter, imported without torch.

    tensorboardX imports torch when it is installed (2 s, and a second framework in a JAX process)
    only to accept torch tensors, which we never pass; hiding torch during that import avoids it.
    Its own NaN warning is silenced: `MultiplexLogger.log_metrics` reports non-finite metrics once.
    """
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
        try:
            import tensorboardX
        finally:
            del sys.modules["torch"]
    import tensorboardX

    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    return tensorboardX.SummaryWriter


def has_events(log_dir: str | os.PathLike) -> bool:
    """Whether an earlier run left event files in `log_dir/tensorboard/`."""
    path = Path(log_dir) / TENSORBOARD_DIR
    return path.is_dir() and any(p.name.startswith("events.out.tfevents") for p in path.iterdir())
