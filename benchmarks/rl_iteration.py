"""Where an RL iteration's time goes: sampling, scoring (KL reference), training.

    python -m benchmarks.rl_iteration [--iters 3] [--groups 8] [--group-size 4] [--max-tokens 16]
                                      [--share-prefix on,off]

Runs the `rl` recipe's workflow on SmolLM2-135M-Instruct (LoRA, arithmetic env) with a KL
penalty against the base (so the scoring pass is real) for a few iterations in a temporary log
dir, and prints the per-iteration split from the logged `time/*` metrics (the first iteration,
which compiles, is excluded), once per `--share-prefix` setting (`model.share_prefix`: a group's
samples hold their prompt once in the training and scoring batches), with the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import jaxcook
from benchmarks.machine import describe


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--share-prefix", default="on,off", help="settings to run, in order: on,off")
    args = parser.parse_args()
    settings = [s.strip() for s in args.share_prefix.split(",") if s.strip()]
    if not settings or set(settings) - {"on", "off"}:
        parser.error(f"--share-prefix takes a comma list of on/off, got {args.share_prefix!r}")
    print(describe(torch_too=False))
    training = {}
    for setting in settings:
        training[setting] = run_once(args, share_prefix=setting == "on")
    if {"on", "off"} <= training.keys():
        print(f"training time, shared prefix off / on: {training['off'] / training['on']:.2f}x")


def run_once(args, *, share_prefix: bool) -> float:
    """One run of the recipe; prints its time split and returns its mean training seconds."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as log_dir:
        result = jaxcook.run(
            "rl",
            **{
                "run.log_dir": log_dir,
                "max_steps": args.iters + 1,
                "groups_per_batch": args.groups,
                "group_size": args.group_size,
                "max_tokens": args.max_tokens,
                "kl_penalty_coef": 0.01,
                "eval_every": 0,
                "env_options": {"n_test_problems": 0},
                "run.save_every": 0,
                "model.share_prefix": share_prefix,
            },
        )
    rows = [r for r in result.metrics if "time/training_s" in r][1:]
    keys = {
        "sampling": "time/sampling_s",
        "scoring (KL reference)": "time/scoring_s",
        "training": "time/training_s",
        "whole iteration": "time/total_s",
    }
    samples = args.groups * args.group_size
    print(
        f"RL iteration, SmolLM2-135M LoRA, {args.groups} groups x {args.group_size} samples, "
        f"max_tokens {args.max_tokens}, shared prefix {'on' if share_prefix else 'off'}, "
        f"mean of {len(rows)} iterations after the first (load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after):"
    )
    total = np.mean([r["time/total_s"] for r in rows])
    for name, key in keys.items():
        seconds = float(np.mean([r[key] for r in rows]))
        print(f"  {name:24s} {seconds:7.2f} s  ({seconds / total:5.1%})")
    tokens = np.mean([r["env/all/total_ac_tokens"] for r in rows])
    print(f"  sampled {tokens:.0f} tokens / {samples} samples per iteration")
    return float(np.mean([r["time/training_s"] for r in rows]))


if __name__ == "__main__":
    main()
