"""Run logging: metrics sinks (metrics.jsonl, TensorBoard, wandb), the log dir, progress, rollout reports.

Importing this package is light: tensorboardX and wandb load only when their logger is created.
(The package shares its last name with the standard library's `logging`; modules in jaxcook use
absolute imports, so `import logging` inside them is always the standard library.)
"""

from jaxcook.logging.html_report import ReportItem, render_rollout_report, report_path, write_rollout_report
from jaxcook.logging.metrics import (
    METRICS_FILE,
    JsonlLogger,
    MetricsLogger,
    MultiplexLogger,
    nonfinite_keys,
    read_metrics,
    to_scalars,
    truncate_metrics,
)
from jaxcook.logging.progress import ProgressBar, format_duration
from jaxcook.logging.run_dir import (
    CONFIG_FILE,
    LOG_FILE,
    LogDirBehavior,
    check_log_dir,
    install_log_file,
    setup_logging,
)
from jaxcook.logging.tensorboard import TensorBoardLogger
from jaxcook.logging.wandb_logger import WandbLogger

__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "JsonlLogger",
    "LogDirBehavior",
    "MetricsLogger",
    "MultiplexLogger",
    "ProgressBar",
    "ReportItem",
    "TensorBoardLogger",
    "WandbLogger",
    "check_log_dir",
    "format_duration",
    "install_log_file",
    "nonfinite_keys",
    "read_metrics",
    "render_rollout_report",
    "report_path",
    "setup_logging",
    "to_scalars",
    "truncate_metrics",
    "write_rollout_report",
]
