"""Opt-in glibc malloc settings for a training process, set by re-executing its command line once.

XLA:CPU allocates a jitted step's temporaries in large blocks (gigabytes for SmolLM2-135M at
8 x 256). glibc serves any block above its mmap threshold (at most 32 MiB) with a fresh mmap
and unmaps it on free, so every step touches its temporaries' pages anew: 3.3M minor page faults
in a 47 s run of `benchmarks.train_step` (SmolLM2 LoRA, bf16 products, jaxcook alone). With
`TUNED` below (no mmap for allocations, one arena so the execution threads share the main
heap, freed memory kept) the blocks are reused from step to step: 0.93M faults, the step
8.26 / 7.98 s -> 7.15 / 6.92 s, the same peak memory (4.1 GB), on a 2-core AMD EPYC (Zen 4).

The price is memory: freed blocks are kept for reuse, never returned to the system, and blocks
of other sizes (each bucket shape compiles its own step) pile up beside them. The quick start's
fine-tune (`scripts/train.py --recipe sft max_steps=12`, same machine): 12.6M -> 2.2M faults,
223.6 -> 207.6 s, but peak resident memory 5.0 -> 8.8 GB. So it is opt-in:
`JAXCOOK_MALLOC=tuned python scripts/train.py ...` (default: `default`, glibc's own settings).

glibc reads these variables only when a process starts, hence the re-exec (`relaunch_tuned`,
called first thing by `scripts/train.py`; the PID, arguments and streams stay the same).
A variable the user set keeps its value. Elsewhere (macOS, musl) nothing happens.
"""

from __future__ import annotations

import os
import platform
import sys

TUNED = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_TRIM_THRESHOLD_": str(10**11),
    "MALLOC_TOP_PAD_": str(10**9),
}
SWITCH = "JAXCOOK_MALLOC"
CHOICES = ("tuned", "default")
_DONE = "JAXCOOK_MALLOC_APPLIED"


def choice() -> str:
    value = os.environ.get(SWITCH, "default")
    if value not in CHOICES:
        raise ValueError(f"{SWITCH}={value!r}: expected one of {CHOICES}")
    return value


def applies() -> bool:
    """Whether this process would be re-executed: glibc, `JAXCOOK_MALLOC=tuned`, not yet done."""
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    return glibc and choice() == "tuned" and _DONE not in os.environ


def relaunch_tuned() -> None:
    """With `JAXCOOK_MALLOC=tuned`: re-execute this process's command line with `TUNED` in its
    environment, once."""
    if not applies():
        return
    env = {**TUNED, **os.environ, _DONE: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
