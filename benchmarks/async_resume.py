"""How far a resumed async RL run lands from an uninterrupted one, next to two uninterrupted ones.

    python -m benchmarks.async_resume [--steps 12] [--stop 6] [--mode async]

Three runs of the `rl` recipe's tiny variant (2-layer random model, LoRA rank 4), same seed:
A and B straight through `--steps` iterations, C stopped after `--stop` (its final checkpoint)
and rerun to `--steps` in the same log dir. Prints the largest absolute difference of the final
trainable weights and of the per-step losses, A vs B and A vs C, and in how many steps the
trained groups differ (their token count and staleness, which name the groups a step took).
The tiny random model earns the same reward on every sample, so its advantages and updates are
0 and the weights agree trivially; the groups are what tells the modes apart. With
`--mode sync` nothing differs (exact resume). In async mode which groups finish first depends
on thread timing, so A vs B may differ already; a resume also resamples the groups in flight.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp

import jaxcook


def run(log_dir: Path, steps: int, mode: str) -> None:
    overrides = {"run.log_dir": str(log_dir), "max_steps": steps, "mode": mode, "eval_every": 0}
    jaxcook.run("rl", tiny=True, **{**overrides, "run.save_every": 0})


def final_params(log_dir: Path, step: int) -> list[np.ndarray]:
    import jax

    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        tree = ckptr.restore(log_dir / "checkpoints" / str(step), args=args)["state"]["params"]
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def rows(log_dir: Path) -> dict[int, dict]:
    lines = (log_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r for r in map(json.loads, lines) if "train/loss" in r}


def groups_key(row: dict) -> tuple:
    keys = ("tokens/num_tokens", "async/staleness_mean", "env/all/ac_tokens_per_turn")
    return tuple(row.get(k) for k in keys)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--stop", type=int, default=6)
    parser.add_argument("--mode", default="async", choices=["sync", "stream", "async"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b, c = (Path(tmp) / name for name in "abc")
        run(a, args.steps, args.mode)
        run(b, args.steps, args.mode)
        run(c, args.stop, args.mode)
        run(c, args.steps, args.mode)  # resumes from checkpoint `stop`
        pa, pb, pc = (final_params(d, args.steps) for d in (a, b, c))
        ra, rb, rc = (rows(d) for d in (a, b, c))
    weight = lambda p, q: max(float(np.abs(x - y).max()) for x, y in zip(p, q, strict=True))  # noqa: E731
    loss = lambda p, q: max(abs(p[s]["train/loss"] - q[s]["train/loss"]) for s in p)  # noqa: E731
    differ = lambda p, q: sum(groups_key(p[s]) != groups_key(q[s]) for s in p)  # noqa: E731
    print(f"mode={args.mode} steps={args.steps} resumed at {args.stop}")
    print(f"max |weights| diff: A vs B {weight(pa, pb):.3e}   A vs C (resumed) {weight(pa, pc):.3e}")
    print(f"max |train/loss| diff: A vs B {loss(ra, rb):.3e}   A vs C (resumed) {loss(ra, rc):.3e}")
    print(f"steps with other groups: A vs B {differ(ra, rb)}/{len(ra)}   A vs C {differ(ra, rc)}/{len(ra)}")


if __name__ == "__main__":
    main()
