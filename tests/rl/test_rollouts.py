"""Rollouts: concurrency, failure strategies, NaN rewards, length stops, context overflow."""

import asyncio
import math

import pytest

from jaxcook.ports import TokensWithLogprobs
from jaxcook.rl.rollouts import (
    FailFast,
    GroupRolloutError,
    MinViableGroup,
    NonFiniteRewardError,
    RetryOnFailure,
    RolloutConfig,
    do_batch_rollout,
    do_group_rollout,
    do_single_rollout,
)
from jaxcook.rl.types import Env, EnvGroupBuilder, InitialObservationOverflow, StepResult
from jaxcook.types import ModelInput


class Policy:
    """Returns `n_tokens` tokens (7, 8, ...) with stop_reason "stop", or "length" when cut by max_tokens."""

    def __init__(self, n_tokens=2):
        self.n_tokens = n_tokens
        self.calls = []
        self.in_flight = self.peak = 0

    async def __call__(self, model_input, stop, *, max_tokens=None):
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        self.calls.append((model_input.length, max_tokens))
        n = self.n_tokens if max_tokens is None else min(self.n_tokens, max_tokens)
        reason = "length" if n < self.n_tokens else "stop"
        return TokensWithLogprobs(list(range(7, 7 + n)), [-0.5] * n, reason)


class TurnsEnv(Env):
    """`turns` turns; each observation extends the last by the action and one token; reward per step."""

    def __init__(self, reward=1.0, turns=1, ob_len=3, fail=None):
        self.reward, self.turns, self.ob_len, self.fail = reward, turns, ob_len, fail
        self.t = 0
        self.seq = list(range(ob_len))
        self.extras = []

    async def initial_observation(self):
        return ModelInput.from_ints(self.seq), [0]

    async def step(self, action, *, extra=None):
        self.extras.append(extra)
        if self.fail is not None:
            raise self.fail
        self.t += 1
        self.seq = self.seq + list(action) + [99]
        done = self.t >= self.turns
        reward = self.reward() if callable(self.reward) else self.reward
        return StepResult(reward, done, ModelInput.from_ints(self.seq), [0], {"turn": self.t})


class Builder(EnvGroupBuilder):
    """Envs from `make(index, attempt)`; counts make_envs calls (one per attempt) and cleanups."""

    def __init__(self, make, size, tags=("t",), group_reward=None):
        self.make, self.size, self.tags, self.group_reward = make, size, list(tags), group_reward
        self.attempt = -1
        self.cleanups = 0

    async def make_envs(self):
        self.attempt += 1
        return [self.make(i, self.attempt) for i in range(self.size)]

    async def compute_group_rewards(self, trajs, envs):
        if self.group_reward is None:
            return await super().compute_group_rewards(trajs, envs)
        return [(self.group_reward, {"grp": 1.0}) for _ in trajs]

    async def cleanup(self):
        self.cleanups += 1

    def logging_tags(self):
        return self.tags


def run(coro):
    return asyncio.run(coro)


def test_single_rollout_multi_turn():
    env = TurnsEnv(reward=0.5, turns=3)
    traj = run(do_single_rollout(Policy(), env))
    assert [t.reward for t in traj.transitions] == [0.5, 0.5, 0.5]
    assert traj.stop_reason == "completed" and traj.total_step_reward() == 1.5
    assert env.extras == [{"stop_reason": "stop"}] * 3
    # turn 2's observation is turn 1's plus the action (7, 8) and 99
    assert traj.transitions[1].ob.to_ints() == [0, 1, 2, 7, 8, 99]


def test_group_rollout_calls_policy_concurrently_and_cleans_up():
    policy = Policy()
    builder = Builder(lambda i, a: TurnsEnv(reward=float(i)), size=4)
    group = run(do_group_rollout(builder, policy))
    assert policy.peak == 4  # all four sampling calls were in flight together
    assert group.get_total_rewards() == [0.0, 1.0, 2.0, 3.0]
    assert builder.cleanups == 1 and group.tags == ["t"]


def test_batch_rollout_is_concurrent_across_groups():
    policy = Policy()
    builders = [Builder(lambda i, a: TurnsEnv(), size=3) for _ in range(5)]
    batch = run(do_batch_rollout(builders, policy))
    assert policy.peak == 15 and len(batch.groups) == 5
    assert batch.metrics["rollout_errors/total"] == 0 and batch.metrics["rollout_errors/failed_groups"] == 0


def _flaky(fail_index, fail_attempts):
    def make(i, attempt):
        fail = RuntimeError("env broke") if i == fail_index and attempt < fail_attempts else None
        return TurnsEnv(fail=fail)

    return make


def test_fail_fast_raises():
    with pytest.raises(RuntimeError, match="env broke"):
        run(do_group_rollout(Builder(_flaky(1, 99), 3), Policy(), FailFast()))
    with pytest.raises(RuntimeError, match="env broke"):
        run(do_batch_rollout([Builder(_flaky(1, 99), 3)], Policy(), FailFast()))


def test_retry_on_failure_recovers_and_counts():
    builder = Builder(_flaky(1, 2), 3)  # env 1 fails on attempts 0 and 1, works on 2
    group = run(do_group_rollout(builder, Policy(), RetryOnFailure(max_retries=2)))
    assert len(group.trajectories_G) == 3
    assert [(e.index, e.attempt, e.error_type) for e in group.rollout_errors] == [
        (1, 0, "RuntimeError"),
        (1, 1, "RuntimeError"),
    ]
    batch = run(do_batch_rollout([Builder(_flaky(1, 2), 3)], Policy(), RetryOnFailure(max_retries=2)))
    assert batch.metrics["rollout_errors/RuntimeError"] == 2
    assert batch.metrics["rollout_errors/kept_groups_with_errors"] == 1


def test_retry_exhausted_drops_group_in_batch():
    with pytest.raises(GroupRolloutError):
        run(do_group_rollout(Builder(_flaky(0, 5), 2), Policy(), RetryOnFailure(max_retries=1)))
    builders = [Builder(_flaky(0, 5), 2), Builder(lambda i, a: TurnsEnv(), 2)]
    batch = run(do_batch_rollout(builders, Policy(), RetryOnFailure(max_retries=1)))
    assert batch.results_P[0] is None and batch.results_P[1] is not None
    assert batch.metrics["rollout_errors/failed_groups"] == 1
    assert batch.metrics["rollout_errors/RuntimeError"] == 2  # two attempts of env 0


def test_min_viable_group():
    def make(i, attempt):
        return TurnsEnv(reward=float(i), fail=RuntimeError("x") if i in (0, 2) else None)

    # 2 of 4 succeed: enough for min_successful=2, not for the default ceil(0.75*4)=3
    group = run(do_group_rollout(Builder(make, 4), Policy(), MinViableGroup(min_successful=2)))
    assert group.get_total_rewards() == [1.0, 3.0] and len(group.rollout_errors) == 2
    with pytest.raises(GroupRolloutError, match="3 successes needed"):
        run(do_group_rollout(Builder(make, 4), Policy(), MinViableGroup()))


def test_nan_reward_is_an_error_by_default():
    builder = Builder(lambda i, a: TurnsEnv(reward=math.nan if i == 0 else 1.0), 2)
    with pytest.raises(NonFiniteRewardError, match="nan"):
        run(do_group_rollout(builder, Policy()))
    # under a tolerant strategy it is a counted rollout failure and the trajectory is dropped
    builder = Builder(lambda i, a: TurnsEnv(reward=math.nan if i == 0 else 1.0), 2)
    batch = run(do_batch_rollout([builder], Policy(), MinViableGroup(min_successful=1)))
    assert batch.groups[0].get_total_rewards() == [1.0]
    assert batch.metrics["rollout_errors/NonFiniteRewardError"] == 1


def test_nan_reward_replaced_when_configured():
    builder = Builder(lambda i, a: TurnsEnv(reward=math.nan if i == 0 else 1.0), 2, group_reward=math.inf)
    group = run(do_group_rollout(builder, Policy(), config=RolloutConfig(nan_reward=-1.0)))
    # env 0: step NaN -> -1, group inf -> -1; env 1: step 1, group inf -> -1
    assert group.get_total_rewards() == [-2.0, 0.0]
    assert [t.metrics["nan_rewards"] for t in group.trajectories_G] == [2, 1]


def test_length_stop_is_seen_by_env_and_recorded():
    env = TurnsEnv(turns=1)
    traj = run(do_single_rollout(Policy(n_tokens=5), env, RolloutConfig(max_tokens=3)))
    assert env.extras == [{"stop_reason": "length"}]
    assert traj.stop_reason == "max_tokens" and traj.transitions[0].ac.tokens == [7, 8, 9]


def test_zero_reward_on_limit_clamps_truncated_episodes():
    builder = Builder(lambda i, a: TurnsEnv(reward=1.0), 1, group_reward=0.5)
    cfg = RolloutConfig(max_tokens=1, zero_reward_on_limit=True)
    group = run(do_group_rollout(builder, Policy(n_tokens=2), config=cfg))
    assert group.get_total_rewards() == [0.0]  # 1.0 + 0.5 clamped to min(1.5, 0) = 0


def test_context_overflow_at_start_and_mid_episode():
    cfg = RolloutConfig(max_tokens=4, max_context_tokens=10, context_overflow_reward=-1.0)
    policy = Policy()
    # prompt of 7 + 4 reserved > 10: nothing is sampled
    traj = run(do_single_rollout(policy, TurnsEnv(ob_len=7), cfg))
    assert traj.transitions == [] and traj.stop_reason == "context_overflow"
    assert traj.total_step_reward() == -1.0 and policy.calls == []
    # prompt 3 fits; after one turn the observation is 3 + 2 + 1 = 6, and 6 + 4 = 10 still fits;
    # after two turns it is 9 and 9 + 4 > 10
    traj = run(do_single_rollout(policy, TurnsEnv(turns=5, reward=1.0), cfg))
    assert len(traj.transitions) == 2 and traj.stop_reason == "context_overflow"
    assert traj.total_step_reward() == 2.0 - 1.0


def test_env_initial_observation_overflow():
    class Overflow(TurnsEnv):
        async def initial_observation(self):
            return InitialObservationOverflow(-0.5, {"too_long": 1.0})

    traj = run(do_single_rollout(Policy(), Overflow()))
    assert traj.transitions == [] and traj.terminal_reward == -0.5 and traj.metrics["too_long"] == 1.0


def test_max_turns():
    traj = run(do_single_rollout(Policy(), TurnsEnv(turns=10), RolloutConfig(max_turns=2)))
    assert len(traj.transitions) == 2 and traj.stop_reason == "max_turns"


def test_config_validation():
    with pytest.raises(ValueError, match="max_tokens"):
        RolloutConfig(max_tokens=0)
    with pytest.raises(ValueError, match="nan_reward"):
        RolloutConfig(nan_reward=math.nan)


def test_fail_fast_cancels_the_other_rollouts():
    class Slow(TurnsEnv):
        async def step(self, action, *, extra=None):
            await asyncio.sleep(30)
            return await super().step(action, extra=extra)

    builder = Builder(lambda i, a: TurnsEnv(fail=RuntimeError("boom")) if i == 0 else Slow(), 3)

    async def go():
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(RuntimeError, match="boom"):
            await do_group_rollout(builder, Policy(), FailFast())
        return loop.time() - start

    assert run(go()) < 5  # the 30 s steps were cancelled, not awaited
    assert builder.cleanups == 1
