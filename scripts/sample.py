"""Sample from a trained model: `python scripts/sample.py RUN_DIR_OR_MODEL --prompts FILE.jsonl [--out F]`.

    python scripts/sample.py runs/sft --prompts prompts.jsonl --out samples.jsonl --temperature 0
    python scripts/sample.py smollm2-135m-instruct --prompts prompts.jsonl --num-samples 4

Each line of the prompt file is {"prompt": "..."} (one user message, optional "system"),
{"messages": [...]} (a conversation) or {"text": "..."} (raw text, no chat template); other keys
are copied to the output line, which adds "completions" (the model's replies, parsed by the run's
renderer) and "stop_reasons". A run dir samples its newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(1, _ROOT)


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens per reply")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=-1, help="-1 = off")
    parser.add_argument("--seed", type=int, default=None, help="fix for reproducible samples")
    parser.add_argument("--renderer", default=None, help="override the renderer saved with the run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sample.py", description=__doc__.splitlines()[0])
    parser.add_argument("path", metavar="RUN_DIR_OR_MODEL")
    parser.add_argument("--prompts", required=True, metavar="FILE.jsonl")
    parser.add_argument("--out", default=None, metavar="F", help="output JSONL (default: stdout)")
    parser.add_argument("--num-samples", type=int, default=1, help="completions per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per sampler call")
    add_sampling_args(parser)
    args = parser.parse_args(argv)

    from jaxcook.data.errors import DataFormatError
    from jaxcook.eval.prompts import read_prompts
    from jaxcook.trained import TrainedModelError, load_trained
    from jaxcook.types import SamplingParams

    try:
        records = read_prompts(args.prompts)
        trained = load_trained(args.path, renderer=args.renderer)
    except (DataFormatError, TrainedModelError) as e:
        parser.exit(2, f"sample.py: error: {e}\n")
    renderer, tokenizer = trained.renderer(), trained.tokenizer
    client = trained.sampling_client(seed=args.seed)
    chat = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=renderer.get_stop_sequences(),
    )
    raw = SamplingParams(**{**chat.__dict__, "stop": None})  # raw text stops at EOS only
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115 - closed below
    try:
        for i in range(0, len(records), args.batch_size):
            batch = records[i : i + args.batch_size]
            try:
                prompts = [r.model_input(renderer, tokenizer) for r in batch]
                params = [chat if r.messages is not None else raw for r in batch]
                responses = client.sample_many(prompts, args.num_samples, params).result()
            except ValueError as e:
                parser.exit(2, f"sample.py: error: {batch[0].where}..{batch[-1].where}: {e}\n")
            for record, response in zip(batch, responses, strict=True):
                texts = [
                    renderer.parse_response(s.tokens)[0]["content"]
                    if record.messages is not None
                    else tokenizer.decode(s.tokens, skip_special_tokens=True)
                    for s in response.sequences
                ]
                reasons = [s.stop_reason for s in response.sequences]
                line = {**record.fields, "completions": texts, "stop_reasons": reasons}
                out.write(json.dumps(line) + "\n")
                out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
