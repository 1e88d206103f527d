"""Get a trained model out: a run dir or checkpoint -> PEFT adapters or merged HF safetensors -> the hub.

    export_trained("runs/sft", "out/merged", format="merged")  # config, model.safetensors, tokenizer
    export_trained("runs/sft", "out/peft", format="peft")      # adapter config + safetensors, tokenizer
    push_folder("out/peft", "me/sft-peft")                     # create_repo + upload_folder

Both formats also get `jaxcook_export.json`: the checkpoint, step, base model and renderer the
export came from. A PEFT export names as its base the hub id the registry model mirrors (the
embedded default's is HuggingFaceTB/SmolLM2-135M-Instruct), or the local folder it was loaded from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from jaxcook.trained import find_checkpoint, load_trained

FORMATS = ("peft", "merged")


class ExportError(ValueError):
    pass


def base_model_reference(model_name: str) -> str:
    """What `transformers` should load as the base of a PEFT adapter trained on `model_name`."""
    from jaxcook.models import MODELS, resolve

    spec = MODELS.get(model_name)
    if spec is not None and spec.hub_id:
        return spec.hub_id
    try:
        where = resolve(model_name)
    except Exception:  # noqa: BLE001 - a hub id that is not reachable here is still a fine reference
        return model_name
    return str(where.path) if where.kind == "safetensors" else model_name


def export_trained(
    path: str | Path,
    out_dir: str | Path,
    *,
    format: Literal["peft", "merged"] = "merged",
    renderer: str | None = None,
) -> Path:
    """Export the trained model at `path` (a run dir or a checkpoint folder) to `out_dir`."""
    from jaxcook.models.export import save_hf, save_peft

    if format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    trained = load_trained(find_checkpoint(path), renderer=renderer)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: exists and is not empty; pass a new --out folder")
    if format == "peft":
        if trained.lora is None:
            raise ExportError(
                f"{trained.checkpoint} is a full fine-tuning run (no LoRA adapters); use --format merged"
            )
        save_peft(trained.model, out, base_model_name_or_path=base_model_reference(trained.model_name))
        trained.tokenizer.save_pretrained(str(out))
    else:
        save_hf(trained.model, out, tokenizer=trained.tokenizer)  # float32
    info = {
        "format": format,
        "checkpoint": str(trained.checkpoint.absolute()),
        "step": trained.step,
        "base_model": trained.model_name,
        "renderer": trained.renderer_name,
        "lora_rank": trained.lora.rank if trained.lora is not None else None,
    }
    (out / "jaxcook_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create `repo_id` on the hub (if needed) and upload `folder` to it; returns the commit URL.
    The endpoint is huggingface_hub's (`HF_ENDPOINT`), the token `token` or the saved / `HF_TOKEN` one."""
    from huggingface_hub import create_repo, upload_folder

    repo = create_repo(repo_id, private=private, exist_ok=True, token=token)
    commit = upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(folder),
        commit_message="Upload model exported by jaxcook",
        token=token,
    )
    return str(commit.commit_url if hasattr(commit, "commit_url") else commit)
