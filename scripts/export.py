"""Export a trained model: `python scripts/export.py RUN_DIR_OR_CHECKPOINT --format peft|merged --out DIR`.

    python scripts/export.py runs/sft --format merged --out exports/sft        # HF safetensors + tokenizer
    python scripts/export.py runs/sft --format peft --out exports/sft-lora     # PEFT LoRA adapters
    python scripts/export.py runs/sft --format peft --out exports/sft-lora --push-to-hub me/sft-lora

A run dir exports its newest checkpoint. `--push-to-hub` uploads the folder with huggingface_hub
(`create_repo` + `upload_folder`; token from `HF_TOKEN` or `huggingface-cli login`, endpoint from
`HF_ENDPOINT`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export.py", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="RUN_DIR_OR_CHECKPOINT")
    parser.add_argument("--format", choices=["peft", "merged"], required=True)
    parser.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    parser.add_argument("--renderer", default=None, help="override the renderer saved with the run")
    parser.add_argument("--push-to-hub", metavar="REPO", default=None, help="hub repo id to upload to")
    parser.add_argument("--private", action="store_true", help="create the hub repo private")
    args = parser.parse_args(argv)

    from jaxcook.publish import ExportError, export_trained, push_folder
    from jaxcook.trained import TrainedModelError

    try:
        out = export_trained(args.path, args.out, format=args.format, renderer=args.renderer)
    except (ExportError, TrainedModelError) as e:
        parser.exit(2, f"export.py: error: {e}\n")
    print(f"exported {args.format} to {out}")
    if args.push_to_hub:
        try:
            url = push_folder(out, args.push_to_hub, private=args.private)
        except Exception as e:  # noqa: BLE001 - a hub failure is one line, the export stays on disk
            parser.exit(1, f"export.py: error: push to {args.push_to_hub} failed ({type(e).__name__}: {e})\n")
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
