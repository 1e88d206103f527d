"""Per-iteration RL metrics from trajectory groups, named as tinker-cookbook logs them.

Keys (under `env/all/`, and under `env/<tag>/` for each logging tag that selects a strict subset
of the batch's groups):

- `reward/total`: mean total reward over episodes.
- every per-transition metric (e.g. `correct`, `format`) and group metric: mean over the
  transitions / group entries that report it; episode metrics (`nan_rewards`) over episodes.
- `by_group/frac_mixed`, `by_group/frac_all_good`, `by_group/frac_all_bad`: fraction of groups
  whose total rewards differ / are all equal and >= `good_thresh` (0.5) / all equal and below.
- `ac_tokens_per_turn`, `ob_tokens_per_turn`, `turns_per_episode`, `total_episodes`,
  `total_turns`, `total_ac_tokens`, `total_ob_tokens`.
- `ac_truncated`: fraction of turns whose action hit max_tokens (stop_reason "length").
- `stop/<reason>`: fraction of episodes that ended for each reason seen in the batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from jaxcook.rl.types import Metrics, TrajectoryGroup


def dict_mean(dicts: Sequence[Metrics]) -> dict[str, float]:
    """Per key, the mean over the dicts that have it."""
    values: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for k, v in d.items():
            values[k].append(float(v))
    return {k: float(np.mean(v)) for k, v in values.items()}


def by_group_metrics(groups_P: Sequence[TrajectoryGroup], good_thresh: float = 0.5) -> dict[str, float]:
    n = len(groups_P)
    mixed = good = bad = 0
    for group in groups_P:
        rewards_G = group.get_total_rewards()
        if len(set(rewards_G)) > 1:
            mixed += 1
        elif rewards_G and rewards_G[0] >= good_thresh:
            good += 1
        else:
            bad += 1
    denom = max(n, 1)
    return {
        "by_group/frac_mixed": mixed / denom,
        "by_group/frac_all_good": good / denom,
        "by_group/frac_all_bad": bad / denom,
    }


def _group_set_metrics(groups_P: Sequence[TrajectoryGroup]) -> dict[str, float]:
    trajs = [traj for g in groups_P for traj in g.trajectories_G]
    turns = [t for traj in trajs for t in traj.transitions]
    n_turns, n_episodes = len(turns), len(trajs)
    ac_tokens = sum(len(t.ac.tokens) for t in turns)
    ob_tokens = sum(t.ob.length for t in turns)
    out: dict[str, float] = {
        "ac_tokens_per_turn": ac_tokens / n_turns if n_turns else 0.0,
        "ob_tokens_per_turn": ob_tokens / n_turns if n_turns else 0.0,
        "turns_per_episode": n_turns / n_episodes if n_episodes else 0.0,
        "total_episodes": n_episodes,
        "total_turns": n_turns,
        "total_ac_tokens": ac_tokens,
        "total_ob_tokens": ob_tokens,
        "ac_truncated": (sum(t.ac.stop_reason == "length" for t in turns) / n_turns) if n_turns else 0.0,
    }
    rewards = [r for g in groups_P for r in g.get_total_rewards()]
    out["reward/total"] = float(np.mean(rewards)) if rewards else 0.0
    reasons = sorted({str(traj.stop_reason) for traj in trajs if traj.stop_reason is not None})
    for reason in reasons:
        out[f"stop/{reason}"] = sum(str(traj.stop_reason) == reason for traj in trajs) / n_episodes
    # Transition and group metrics share one mean so a key (e.g. `format`) reported per step by
    # one env and per group by another is still one number.
    out.update(dict_mean([t.metrics for t in turns] + [m for g in groups_P for m in g.metrics_G]))
    out.update({k: v for k, v in dict_mean([traj.metrics for traj in trajs]).items() if k not in out})
    out.update(by_group_metrics(groups_P))
    return out


def compute_trajectory_metrics(
    groups_P: Sequence[TrajectoryGroup], taglist_P: Sequence[Sequence[str]] | None = None
) -> dict[str, float]:
    """`env/all/...` for the batch and `env/<tag>/...` per tag that splits it.

    `taglist_P` defaults to each group's `tags` (its builder's `logging_tags()`).
    """
    if taglist_P is None:
        taglist_P = [g.tags for g in groups_P]
    if len(taglist_P) != len(groups_P):
        raise ValueError(f"{len(groups_P)} groups but {len(taglist_P)} tag lists")
    by_tag: dict[str, list[TrajectoryGroup]] = defaultdict(list)
    for tags, group in zip(taglist_P, groups_P):
        for tag in tags:
            by_tag[tag].append(group)
    out: dict[str, float] = {}
    if any(len(gs) < len(groups_P) for gs in by_tag.values()):
        for tag, gs in by_tag.items():
            out.update({f"env/{tag}/{k}": v for k, v in _group_set_metrics(gs).items()})
    out.update({f"env/all/{k}": v for k, v in _group_set_metrics(groups_P).items()})
    return out
