"""Rollouts: run envs against a policy, one episode, one group, or a whole batch concurrently.

Every sampling call of a group (and of a batch) is issued concurrently so a batching
`TokenCompleter` can serve them with one sampler call.

Edge cases, and what happens:
- An env (or the policy) raises: the group's `RolloutStrategy` decides. `FailFast` re-raises
  (and cancels the group's other rollouts); `RetryOnFailure` retries that rollout on a fresh env
  (`builder.make_envs()` again, same index) and fails the group if retries run out;
  `MinViableGroup` keeps the group when at least `min_successful` rollouts succeeded. A failed
  group raises `GroupRolloutError`; `do_batch_rollout` drops it and counts it in
  `rollout_errors/*`.
- A reward that is NaN or infinite (step or group reward): with `RolloutConfig.nan_reward=None`
  (default) it raises `NonFiniteRewardError`, i.e. it is a rollout failure handled by the
  strategy as above (dropped, retried, or fatal under `FailFast`) - a broken reward function
  never turns into a silent training signal. With `nan_reward=x` it is replaced by x and counted
  in the episode metric `nan_rewards` (logged as `env/all/nan_rewards`, per episode).
- An action that hit `max_tokens` (stop_reason "length"): the env sees it in
  `extra["stop_reason"]` (ProblemEnv scores format 0, EnvFromMessageEnv gives its overflow
  reward); if it ends the episode the stop reason is `max_tokens`; counted as
  `env/all/ac_truncated` (fraction of turns). `zero_reward_on_limit=True` clamps the total
  reward of limit-stopped episodes to min(R, 0).
- An observation that does not fit: with `max_context_tokens=C`, an observation of length L
  overflows when `L + (max_tokens or 1) > C`. The episode ends before sampling with stop reason
  `context_overflow` and `terminal_reward = context_overflow_reward`; at the first turn that
  leaves a trajectory with no transitions (like an env's own `InitialObservationOverflow`).
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from jaxcook.ports import TokenCompleter
from jaxcook.rl.types import (
    Env,
    EnvGroupBuilder,
    InitialObservationOverflow,
    Metrics,
    RolloutError,
    StopReason,
    Trajectory,
    TrajectoryGroup,
    Transition,
)
from jaxcook.types import ModelInput

LIMIT_STOP_REASONS = frozenset({StopReason.MAX_TOKENS, StopReason.MAX_TURNS, StopReason.CONTEXT_OVERFLOW})


@dataclass(frozen=True, kw_only=True)
class RolloutConfig:
    max_tokens: int | None = None  # per sampling call; None = the completer's default
    max_context_tokens: int | None = None  # observation + max_tokens must fit in this
    max_turns: int | None = None
    context_overflow_reward: float = 0.0
    nan_reward: float | None = None  # None: a non-finite reward is a rollout error
    zero_reward_on_limit: bool = False  # total reward <- min(R, 0) for limit-stopped episodes

    def __post_init__(self):
        for name in ("max_tokens", "max_context_tokens", "max_turns"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"RolloutConfig.{name} must be >= 1 or None, got {value}")
        if self.nan_reward is not None and not math.isfinite(self.nan_reward):
            raise ValueError(f"RolloutConfig.nan_reward must be finite or None, got {self.nan_reward}")


@dataclass(frozen=True)
class FailFast:
    """Any rollout error fails the whole batch (the default: errors are bugs until shown otherwise)."""


@dataclass(frozen=True)
class RetryOnFailure:
    """Retry a failed rollout on a fresh env up to `max_retries` times; then fail the group."""

    max_retries: int = 3


@dataclass(frozen=True)
class MinViableGroup:
    """Keep a group if at least `min_successful` rollouts succeed (None = ceil(0.75 G))."""

    min_successful: int | None = None
    max_retries: int = 0

    def required(self, group_size: int) -> int:
        if self.min_successful is None:
            return math.ceil(0.75 * group_size)
        return min(self.min_successful, group_size)


RolloutStrategy = FailFast | RetryOnFailure | MinViableGroup


class NonFiniteRewardError(ValueError):
    """A reward function returned NaN or inf."""


class GroupRolloutError(RuntimeError):
    """A group could not be completed under a tolerant strategy; the batch drops it."""

    def __init__(self, message: str, errors: Sequence[RolloutError]):
        super().__init__(message)
        self.errors = list(errors)


def _checked_reward(reward: float, config: RolloutConfig, where: str) -> tuple[float, int]:
    """(reward to use, 1 if it was replaced else 0)."""
    reward = float(reward)
    if math.isfinite(reward):
        return reward, 0
    if config.nan_reward is None:
        raise NonFiniteRewardError(
            f"{where} returned reward {reward}; fix the reward function or set RolloutConfig.nan_reward"
        )
    return config.nan_reward, 1


def _overflows(ob: ModelInput, config: RolloutConfig) -> bool:
    if config.max_context_tokens is None:
        return False
    return ob.length + (config.max_tokens or 1) > config.max_context_tokens


async def do_single_rollout(
    policy: TokenCompleter, env: Env, config: RolloutConfig = RolloutConfig()
) -> Trajectory:
    """Run one episode of `env`, sampling each action from `policy`."""
    first = await env.initial_observation()
    if isinstance(first, InitialObservationOverflow):
        reward, n_nan = _checked_reward(first.reward, config, f"{type(env).__name__}.initial_observation")
        metrics = {**first.metrics, "nan_rewards": n_nan}
        return Trajectory([], ModelInput.empty(), StopReason.CONTEXT_OVERFLOW, reward, metrics)
    ob, stop = first
    transitions: list[Transition] = []
    n_nan = 0
    terminal_reward = 0.0
    while True:
        if config.max_turns is not None and len(transitions) >= config.max_turns:
            stop_reason = StopReason.MAX_TURNS
            break
        if _overflows(ob, config):
            stop_reason = StopReason.CONTEXT_OVERFLOW
            terminal_reward = config.context_overflow_reward
            break
        ac = await policy(ob, stop, max_tokens=config.max_tokens)
        result = await env.step(ac.tokens, extra={"stop_reason": ac.stop_reason})
        reward, replaced = _checked_reward(result.reward, config, f"{type(env).__name__}.step")
        n_nan += replaced
        transitions.append(
            Transition(ob, ac, reward, result.episode_done, dict(result.metrics), dict(result.logs))
        )
        if result.episode_done:
            if result.stop_reason is not None:
                stop_reason = result.stop_reason
            elif ac.stop_reason == "length":
                stop_reason = StopReason.MAX_TOKENS
            else:
                stop_reason = StopReason.COMPLETED
            ob = result.next_observation
            break
        ob, stop = result.next_observation, result.next_stop_condition
    return Trajectory(transitions, ob, stop_reason, terminal_reward, {"nan_rewards": n_nan})


async def _gather_fail_fast(aws: Sequence[Awaitable]) -> list:
    """`asyncio.gather`, but the first error cancels the siblings before it propagates."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _rollout_with_retries(
    index: int,
    env: Env,
    builder: EnvGroupBuilder,
    policy: TokenCompleter,
    config: RolloutConfig,
    max_retries: int,
) -> tuple[Trajectory | None, Env, list[RolloutError]]:
    errors: list[RolloutError] = []
    for attempt in range(max_retries + 1):
        if attempt > 0:
            env = (await builder.make_envs())[index]
        try:
            return await do_single_rollout(policy, env, config), env, errors
        except Exception as e:  # noqa: BLE001 - counted and handled by the strategy
            errors.append(RolloutError(index, attempt, type(e).__name__, str(e)[:500]))
    return None, env, errors


def _apply_limit_clamp(trajs: list[Trajectory], finals: list[float], config: RolloutConfig) -> list[float]:
    if not config.zero_reward_on_limit:
        return finals
    out = []
    for traj, final in zip(trajs, finals, strict=True):
        total = traj.total_step_reward() + final
        # Grade then clamp: shift the group reward so the total becomes min(total, 0).
        out.append(final + (min(total, 0.0) - total) if traj.stop_reason in LIMIT_STOP_REASONS else final)
    return out


async def do_group_rollout(
    builder: EnvGroupBuilder,
    policy: TokenCompleter,
    strategy: RolloutStrategy = FailFast(),
    config: RolloutConfig = RolloutConfig(),
) -> TrajectoryGroup:
    """Roll out every env of one group concurrently, then add the group rewards."""
    try:
        envs = list(await builder.make_envs())
        errors: list[RolloutError] = []
        if isinstance(strategy, FailFast):
            trajs = await _gather_fail_fast([do_single_rollout(policy, env, config) for env in envs])
        else:
            results = await asyncio.gather(
                *[
                    _rollout_with_retries(i, env, builder, policy, config, strategy.max_retries)
                    for i, env in enumerate(envs)
                ]
            )
            trajs, kept_envs = [], []
            for traj, env, errs in results:
                errors.extend(errs)
                if traj is not None:
                    trajs.append(traj)
                    kept_envs.append(env)
            envs = kept_envs
            needed = len(results) if isinstance(strategy, RetryOnFailure) else strategy.required(len(results))
            if len(trajs) < needed:
                raise GroupRolloutError(
                    f"{len(results) - len(trajs)} of {len(results)} rollouts failed "
                    f"({needed} successes needed); errors: {errors[:3]}",
                    errors,
                )
        try:
            rewards_and_metrics = await builder.compute_group_rewards(trajs, envs)
            if len(rewards_and_metrics) != len(trajs):
                raise ValueError(
                    f"{type(builder).__name__}.compute_group_rewards returned "
                    f"{len(rewards_and_metrics)} rewards for {len(trajs)} trajectories"
                )
            finals, metrics_G = [], []
            for traj, (reward, metrics) in zip(trajs, rewards_and_metrics, strict=True):
                reward, replaced = _checked_reward(
                    reward, config, f"{type(builder).__name__}.compute_group_rewards"
                )
                if replaced:
                    traj.metrics["nan_rewards"] = traj.metrics.get("nan_rewards", 0) + 1
                finals.append(reward)
                metrics_G.append(dict(metrics))
        except Exception as e:
            if isinstance(strategy, FailFast):
                raise
            error = RolloutError(-1, 0, type(e).__name__, str(e)[:500])
            raise GroupRolloutError(f"group reward failed: {e}", [*errors, error]) from e
        finals = _apply_limit_clamp(trajs, finals, config)
        return TrajectoryGroup(trajs, finals, metrics_G, errors, list(builder.logging_tags()))
    finally:
        await builder.cleanup()


@dataclass
class RolloutBatch:
    """The groups of one batch, aligned with the builders (None where the group failed)."""

    results_P: list[TrajectoryGroup | None]
    metrics: Metrics = field(default_factory=dict)

    @property
    def groups(self) -> list[TrajectoryGroup]:
        return [g for g in self.results_P if g is not None]


def rollout_error_metrics(results_P: Sequence[TrajectoryGroup | None | GroupRolloutError]) -> Metrics:
    """`rollout_errors/*` counts: failed attempts by exception type, retries, dropped groups."""
    counts: Counter[str] = Counter()
    failed_groups = 0
    for result in results_P:
        if isinstance(result, GroupRolloutError):
            failed_groups += 1
            errors = result.errors
        elif result is None:
            failed_groups += 1
            errors = []
        else:
            errors = result.rollout_errors
        for err in errors:
            counts[err.error_type] += 1
    metrics: Metrics = {f"rollout_errors/{name}": n for name, n in sorted(counts.items())}
    metrics["rollout_errors/total"] = sum(counts.values())
    metrics["rollout_errors/failed_groups"] = failed_groups
    metrics["rollout_errors/kept_groups_with_errors"] = sum(
        1 for r in results_P if isinstance(r, TrajectoryGroup) and r.rollout_errors
    )
    return metrics


async def do_batch_rollout(
    builders: Sequence[EnvGroupBuilder],
    policy: TokenCompleter,
    strategy: RolloutStrategy = FailFast(),
    config: RolloutConfig = RolloutConfig(),
) -> RolloutBatch:
    """All groups of a batch concurrently. Failed groups (tolerant strategies) become None."""

    async def one(builder: EnvGroupBuilder) -> TrajectoryGroup | GroupRolloutError:
        try:
            return await do_group_rollout(builder, policy, strategy, config)
        except GroupRolloutError as e:
            return e

    if isinstance(strategy, FailFast):
        outcomes = await _gather_fail_fast([one(b) for b in builders])
    else:
        outcomes = await asyncio.gather(*[one(b) for b in builders])
    metrics = rollout_error_metrics(outcomes)
    results = [o if isinstance(o, TrajectoryGroup) else None for o in outcomes]
    return RolloutBatch(results, metrics)
