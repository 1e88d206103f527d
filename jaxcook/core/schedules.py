"""Learning-rate schedules: the multiplier applied to the base learning rate at a step.

Tinker-cookbook's schedules (no warmup there): constant 1, linear `1 - step/total`, cosine
`0.5 (1 + cos(pi step/total))`. Optional linear warmup: the multiplier is `step / warmup_steps`
for `step < warmup_steps` (0 at step 0, reaching 1 at `warmup_steps`), then the schedule runs
on the remaining `total_steps - warmup_steps` steps. Progress is clamped to [0, 1], so steps past
`total_steps` keep the final value. Works on Python numbers (returns a float) and on JAX scalars
(returns a JAX scalar, so it can run inside jit).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def _constant(progress, xp):
    return xp.ones_like(progress)


def _linear(progress, xp):
    return 1.0 - progress


def _cosine(progress, xp):
    return 0.5 * (1.0 + xp.cos(math.pi * progress))


SCHEDULES = {"constant": _constant, "linear": _linear, "cosine": _cosine}


def lr_multiplier(schedule: str, step, total_steps, warmup_steps=0):
    """Multiplier in [0, 1] for `step` (0-based) of a run of `total_steps` steps."""
    if schedule not in SCHEDULES:
        raise KeyError(f"unknown lr schedule {schedule!r}; valid schedules: {sorted(SCHEDULES)}")
    traced = any(not isinstance(x, int | float) for x in (step, total_steps, warmup_steps))
    if not traced:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")
    xp = jnp if traced else np  # numpy on host: float64, no device dispatch
    step = xp.maximum(step, 0) * 1.0
    decay_steps = xp.maximum(total_steps - warmup_steps, 1) * 1.0
    progress = xp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
    value = SCHEDULES[schedule](progress, xp)
    warm = step / xp.maximum(warmup_steps, 1)
    out = xp.where(step < warmup_steps, warm, value)
    return out if traced else float(out)
