"""The state dir: training runs and their checkpoints, on disk, so they survive a restart.

Layout (one folder per training run, named by its model id):

    <state>/runs/<model_id>/run.json                  base model, LoRA config, user metadata
    <state>/runs/<model_id>/weights/<name>/           Orbax checkpoint with the optimizer (save_state)
    <state>/runs/<model_id>/sampler_weights/<name>/   Orbax checkpoint, weights only (for sampling)
    <state>/runs/<model_id>/<kind>/<name>.json        when it was saved, its size, user metadata

A checkpoint's sidecar is written after the checkpoint itself, so a listed checkpoint is
complete. Tinker paths map onto it: `tinker://<model_id>/weights/<name>`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from jaxcook.lora import LoraConfig
from jaxcook.serve.errors import NotFound, UserError

KINDS = {"weights": "training", "sampler_weights": "sampler"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:=+-]{0,199}$")


@dataclass(frozen=True)
class TinkerPath:
    model_id: str
    kind: str  # "weights" | "sampler_weights"
    name: str

    @classmethod
    def parse(cls, path: str, where: str = "path") -> TinkerPath:
        if not isinstance(path, str) or not path.startswith("tinker://"):
            raise UserError(f"{where}: {path!r} is not a tinker:// path")
        parts = path[len("tinker://") :].split("/")
        if len(parts) != 3 or parts[1] not in KINDS:
            raise UserError(f"{where}: {path!r} is not tinker://<model_id>/(weights|sampler_weights)/<name>")
        check_name(parts[2], where)
        return cls(*parts)

    def __str__(self) -> str:
        return f"tinker://{self.model_id}/{self.kind}/{self.name}"


def check_name(name, where: str = "path") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise UserError(f"{where}: checkpoint name {name!r} must match {_NAME.pattern} (no '/' or '..')")
    return name


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def lora_to_json(lora: LoraConfig) -> dict:
    return {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "seed": lora.seed,
        "train_attn": lora.train_attn,
        "train_mlp": lora.train_mlp,
        "train_unembed": lora.train_unembed,
    }


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class StateDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def run_dir(self, model_id: str) -> Path:
        if "/" in model_id or model_id in ("", ".", ".."):
            raise UserError(f"model_id {model_id!r} is not a valid id")
        return self.root / "runs" / model_id

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, model_id: str, *, base_model: str, lora: LoraConfig, user_metadata: dict | None):
        folder = self.run_dir(model_id)
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        _write_json(
            folder / "run.json",
            {
                "training_run_id": model_id,
                "base_model": base_model,
                "lora": lora_to_json(lora),
                "user_metadata": user_metadata or None,
                "created": now,
                "last_request_time": now,
            },
        )

    def run(self, model_id: str) -> dict:
        path = self.run_dir(model_id) / "run.json"
        if not path.exists():
            raise NotFound(f"unknown training run {model_id!r} (no {path})")
        return json.loads(path.read_text())

    def touch(self, model_id: str) -> None:
        try:
            run = self.run(model_id)
        except NotFound:
            return
        run["last_request_time"] = time.time()
        _write_json(self.run_dir(model_id) / "run.json", run)

    def lora_of(self, model_id: str) -> LoraConfig:
        return LoraConfig(**self.run(model_id)["lora"])

    def run_ids(self) -> list[str]:
        runs = [p for p in (self.root / "runs").iterdir() if (p / "run.json").exists()]
        return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime)]

    # -- checkpoints -------------------------------------------------------------------------

    def folder(self, path: TinkerPath) -> Path:
        return self.run_dir(path.model_id) / path.kind / path.name

    def existing(self, path: TinkerPath) -> Path:
        """The folder of a complete checkpoint, or a NotFound naming it."""
        folder = self.folder(path)
        if not (folder.parent / f"{path.name}.json").exists():
            raise NotFound(f"checkpoint {path} does not exist")
        return folder

    def record(self, path: TinkerPath, *, user_metadata: dict | None = None) -> dict:
        """Write the sidecar of a finished checkpoint; returns it."""
        folder = self.folder(path)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        entry = {
            "checkpoint_id": f"{path.kind}/{path.name}",
            "checkpoint_type": KINDS[path.kind],
            "time": iso(time.time()),
            "tinker_path": str(path),
            "size_bytes": size,
            "public": False,
            "user_metadata": user_metadata or None,
        }
        _write_json(folder.parent / f"{path.name}.json", entry)
        return entry

    def checkpoints(self, model_id: str) -> list[dict]:
        folder = self.run_dir(model_id)
        if not (folder / "run.json").exists():
            raise NotFound(f"unknown training run {model_id!r}")
        out = []
        for kind in KINDS:
            for sidecar in (folder / kind).glob("*.json"):
                out.append(json.loads(sidecar.read_text()))
        return sorted(out, key=lambda c: c["time"])

    def delete(self, model_id: str, checkpoint_id: str) -> None:
        kind, _, name = checkpoint_id.partition("/")
        if kind not in KINDS:
            raise UserError(
                f"checkpoint_id {checkpoint_id!r} must be weights/<name> or sampler_weights/<name>"
            )
        path = TinkerPath(model_id, kind, check_name(name, "checkpoint_id"))
        sidecar = self.folder(path).parent / f"{name}.json"
        if not sidecar.exists():
            raise NotFound(f"checkpoint {path} does not exist")
        sidecar.unlink()  # first: an interrupted delete leaves an unlisted folder, not a broken entry
        shutil.rmtree(self.folder(path), ignore_errors=True)

    def training_run(self, model_id: str) -> dict:
        """The run as Tinker's `TrainingRun`."""
        run = self.run(model_id)
        ckpts = self.checkpoints(model_id)
        last = lambda kind: next((c for c in reversed(ckpts) if c["checkpoint_type"] == kind), None)
        return {
            "training_run_id": model_id,
            "base_model": run["base_model"],
            "model_owner": "local",
            "is_lora": True,
            "corrupted": False,
            "lora_rank": run["lora"]["rank"],
            "last_request_time": iso(run["last_request_time"]),
            "last_checkpoint": last("training"),
            "last_sampler_checkpoint": last("sampler"),
            "user_metadata": run.get("user_metadata"),
        }

    def weights_info(self, path: TinkerPath) -> dict:
        """Tinker's `WeightsInfoResponse` of a checkpoint."""
        self.existing(path)
        run = self.run(path.model_id)
        lora = run["lora"]
        return {
            "base_model": run["base_model"],
            "optimizer_config": {"type": "adamw"},
            "is_lora": True,
            "lora_rank": lora["rank"],
            "train_unembed": lora["train_unembed"],
            "train_mlp": lora["train_mlp"],
            "train_attn": lora["train_attn"],
        }
