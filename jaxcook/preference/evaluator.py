"""Win rate of a policy against reference completions, judged by a preference model in both orders.

For each prompt i, the policy writes one completion pi_i and the judge compares it with the
reference ref_i (the comparison's `completion_A`; `completion_B` is not used):

    forward   s_i = pm(A=ref_i, B=pi_i)          policy shown second; +1 = policy better
    reverse   r_i = pm(A=pi_i, B=ref_i)          policy shown first;  -1 = policy better

Each judgement is a win in [0, 1]: (1 + s_i) / 2 forward, (1 - r_i) / 2 reverse (a tie is 1/2).
Judging both orders cancels a judge's bias for one position.

    w_i              = mean of prompt i's judgements' wins (one or two)
    win_rate         = mean_i w_i
    win_rate_stderr  = std(w, ddof=1) / sqrt(n)      (n = number of prompts)

The standard error is that of a mean over prompts, the independent unit (the two orders of one
prompt are averaged first, since they are not independent). For 0/1 outcomes it is
sqrt(p (1 - p) / (n - 1)), the binomial standard error with the n - 1 correction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from jaxcook.ports import MessageCompleter
from jaxcook.preference.preference_model import PreferenceModel
from jaxcook.preference.types import Comparison


def win_rate_metrics(forward: Sequence[float], reverse: Sequence[float] | None = None) -> dict[str, float]:
    """Metrics from per-prompt preferences (see the module docstring); `reverse` None = one order."""
    s = np.asarray(forward, np.float64)
    if s.ndim != 1 or len(s) < 2:
        raise ValueError(f"need the preferences of at least 2 prompts for a standard error, got {len(s)}")
    wins = [(1.0 + s) / 2.0]
    if reverse is not None:
        r = np.asarray(reverse, np.float64)
        if r.shape != s.shape:
            raise ValueError(f"forward has {len(s)} preferences, reverse {len(r)}")
        wins.append((1.0 - r) / 2.0)
    wins_JP = np.stack(wins)  # J judgements per prompt (1 or 2), P prompts
    if np.any(np.abs(wins_JP - 0.5) > 0.5 + 1e-9) or not np.all(np.isfinite(wins_JP)):
        raise ValueError("preferences must lie in [-1, 1]")
    w_P = wins_JP.mean(axis=0)
    n = len(w_P)
    out = {
        "win_rate": float(w_P.mean()),
        "win_rate_stderr": float(w_P.std(ddof=1) / np.sqrt(n)),
        "num_comparisons": float(n),
        "num_judgements": float(wins_JP.size),
        "tie_rate": float(np.mean(wins_JP == 0.5)),
        "win_rate_policy_as_B": float(wins_JP[0].mean()),
    }
    if reverse is not None:
        out["win_rate_policy_as_A"] = float(wins_JP[1].mean())
    return out


class ComparisonEvaluator:
    """`await evaluator(policy) -> {"<name>/win_rate", "<name>/win_rate_stderr", ...}`.

    Keys (prefixed by `name/`, or bare with `name=None`): `win_rate`, `win_rate_stderr`,
    `num_comparisons` (prompts), `num_judgements`, `tie_rate` (judgements exactly 0),
    `win_rate_policy_as_B` (forward order only) and, with `both_ways`, `win_rate_policy_as_A`.
    All policy calls run concurrently, then all judgements.
    """

    def __init__(
        self,
        preference_model: PreferenceModel,
        comparisons: Sequence[Comparison],
        *,
        both_ways: bool = True,
        name: str | None = "comparison",
    ):
        if len(comparisons) < 2:
            raise ValueError(f"ComparisonEvaluator needs at least 2 comparisons, got {len(comparisons)}")
        self.preference_model, self.comparisons = preference_model, list(comparisons)
        self.both_ways, self.name = both_ways, name

    async def judge(self, policy: MessageCompleter) -> tuple[list[float], list[float] | None]:
        """(forward preferences, reverse preferences or None), one per comparison."""
        replies = await asyncio.gather(*(policy(list(c.prompt_conversation)) for c in self.comparisons))
        ours = [replace(c, completion_B=[m]) for c, m in zip(self.comparisons, replies, strict=True)]
        jobs = [self.preference_model(c) for c in ours]
        if self.both_ways:
            jobs += [self.preference_model(c.swap()) for c in ours]
        prefs = [float(p) for p in await asyncio.gather(*jobs)]
        n = len(ours)
        return prefs[:n], (prefs[n:] if self.both_ways else None)

    async def __call__(self, policy: MessageCompleter) -> dict[str, float]:
        forward, reverse = await self.judge(policy)
        metrics = win_rate_metrics(forward, reverse)
        return {(f"{self.name}/{k}" if self.name else k): v for k, v in metrics.items()}
