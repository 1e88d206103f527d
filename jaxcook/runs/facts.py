"""What the registry records about a run, read from its config dict and its metrics history.

    base_model_of(config)        # "smollm2-135m-instruct"
    parents_of(config)           # [("init", "/abs/ckpt"), ("teacher", "/abs/teacher/ckpt")]
    dataset_of(config)           # {"dataset": "reasoning_gym_math", "dataset_options": {...}}
    final, best = summarize(history)
    checkpoint_sha256(path)      # one digest of a checkpoint folder's files and their names

A config reaches its parents through `load_checkpoint` keys: one under a key path with "teacher"
in it is a teacher, any other is the weights the run starts from ("init").
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

DATA_KEYS = ("dataset", "dataset_options", "env", "env_options")
# Metrics for which smaller is better; every other one is best at its largest.
LOWER_IS_BETTER = ("loss", "nll", "bpb", "kl", "error", "perplexity")


def normalize_path(path: str) -> str:
    """A local path made absolute with symlinks resolved (so two spellings match); URLs unchanged."""
    return path if "://" in path else os.path.realpath(os.path.expanduser(path))


def checkpoints_of(log_dir: str) -> list[tuple[int, str]]:
    """(step, path) of a run's checkpoints: its folders `checkpoints/<step>`, or for a URL log dir
    its committed steps (`jaxcook.remote_checkpoints`), as URLs."""
    from jaxcook.storage import is_remote

    if is_remote(log_dir):
        from jaxcook.remote_checkpoints import RemoteCheckpoints
        from jaxcook.storage import RemoteDir

        remote = RemoteDir(log_dir)
        try:
            checkpoints = RemoteCheckpoints(remote)
            return [(step, checkpoints.url(step)) for step in checkpoints.committed()]
        finally:
            remote.close()
    folder = Path(log_dir) / "checkpoints"
    steps = sorted(int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit())
    return [(step, normalize_path(str(folder / str(step)))) for step in steps]


def log_dir_exists(log_dir: str) -> bool:
    from jaxcook.storage import RemoteDir, is_remote

    if not is_remote(log_dir):
        return Path(log_dir).exists()
    remote = RemoteDir(log_dir)
    try:
        return remote.exists()
    finally:
        remote.close()


def base_model_of(config: dict) -> str | None:
    model = config.get("model")
    if isinstance(model, dict):
        return model.get("name")
    return model if isinstance(model, str) else None


def parents_of(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(role, normalized checkpoint path) for every non-empty `load_checkpoint` (and `teacher_checkpoint`)."""
    found: list[tuple[str, str]] = []
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else key
            if key in ("load_checkpoint", "teacher_checkpoint") and isinstance(value, str) and value:
                role = "teacher" if "teacher" in path else "init"
                found.append((role, normalize_path(value)))
            else:
                found += parents_of(value, path)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            found += parents_of(value, f"{prefix}[{i}]")
    return sorted(set(found))


def dataset_of(config: dict) -> dict | None:
    """The data source keys of a config; for several sources (`datasets`), each one's dataset keys."""
    spec = {k: config[k] for k in DATA_KEYS if config.get(k) not in (None, {}, "")}
    if isinstance(config.get("datasets"), list):
        spec["datasets"] = [
            {k: d[k] for k in DATA_KEYS if k in d} for d in config["datasets"] if isinstance(d, dict)
        ]
    return spec or None


def summarize(history: list[dict]) -> tuple[dict[str, float], dict[str, dict]]:
    """(final, best): the last logged value of every numeric metric, and the best of each `test/`
    metric with its step (smallest for losses, NLL, bpb, KL; largest for the rest)."""
    final: dict[str, float] = {}
    best: dict[str, dict] = {}
    for row in history:
        step = row.get("step")
        for key, value in row.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                final[key] = str(value)  # JSON has no NaN; keep it visible as text
                continue
            final[key] = value
            if not key.startswith("test/"):
                continue
            lower = any(word in key for word in LOWER_IS_BETTER)
            old = best.get(key)
            if old is None or (value < old["value"] if lower else value > old["value"]):
                best[key] = {"value": value, "step": step}
    return final, best


def checkpoint_sha256(path: str | Path) -> str | None:
    """The sha256 of a `sha256sum`-style manifest ("<file sha256>  <relative name>\\n" per file,
    sorted by name) of every file under `path`; None for a URL or a path that is not there."""
    if "://" in str(path) or not Path(path).exists():
        return None
    path = Path(path)
    root, files = (path.parent, [path]) if path.is_file() else (path, sorted(path.rglob("*")))
    manifest = hashlib.sha256()
    for file in files:
        if not file.is_file():
            continue
        digest = hashlib.sha256()
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        manifest.update(f"{digest.hexdigest()}  {file.relative_to(root).as_posix()}\n".encode())
    return manifest.hexdigest()
