"""Evaluate a policy on an RL dataset (usually the test split): roll out every group, log metrics.

Keys are the training metrics under a prefix, e.g. `test/env/all/correct`,
`test/env/all/reward/total`, plus `test/rollout_errors/*`.
"""

from __future__ import annotations

from jaxcook.ports import TokenCompleter
from jaxcook.rl.metrics import compute_trajectory_metrics
from jaxcook.rl.rollouts import FailFast, RolloutConfig, RolloutStrategy, do_batch_rollout
from jaxcook.rl.types import RLDataset


async def evaluate_rl_dataset(
    dataset: RLDataset,
    policy: TokenCompleter,
    *,
    config: RolloutConfig | None = None,
    strategy: RolloutStrategy | None = None,
    name: str = "test",
) -> dict[str, float]:
    """All groups of every batch rolled out concurrently; metrics prefixed by `name/`."""
    builders = [b for i in range(len(dataset)) for b in dataset.get_batch(i)]
    batch = await do_batch_rollout(builders, policy, strategy or FailFast(), config or RolloutConfig())
    metrics = dict(compute_trajectory_metrics(batch.groups)) if batch.groups else {}
    metrics.update(batch.metrics)
    return {f"{name}/{k}": float(v) for k, v in metrics.items()}
