"""RL workflow: the three modes on the tiny model, staleness bound, failure handling in a run."""

import dataclasses
import math
import queue
import threading

import pytest

import jaxcook
from jaxcook.rl.envs import registry
from jaxcook.rl.envs.arithmetic import ArithmeticDatasetBuilder
from jaxcook.rl.rollouts import GroupRolloutError
from jaxcook.workflows.rl_async import take_fresh_groups
from tests.reports import eval_report, steps


def run_tiny(tmp_path, name="rl", **overrides):
    return jaxcook.run(name, tiny=True, **{"run.log_dir": str(tmp_path / "run"), **overrides})


def train_rows(result):
    return [r for r in result.metrics if "train/loss" in r]


@pytest.mark.parametrize("mode", ["sync", "stream", "async"])
def test_modes_train_and_log(tmp_path, mode):
    result = run_tiny(tmp_path, mode=mode, num_substeps=2)
    rows = train_rows(result)
    assert len(rows) == 3
    for row in rows:
        assert "env/all/reward/total" in row and "env/all/by_group/frac_mixed" in row
        assert abs(row["optim/kl_sample_train_v1"]) < 1e-3  # the sampler's log-probs are the trainer's
    assert (tmp_path / "run" / "reports" / "iteration_000000.html").exists()
    assert "test/env/all/correct" in result.metrics[-1]
    # the run's trace: one span per iteration and per eval (tiny: eval_every=2 of 3, and the end)
    log_dir = tmp_path / "run"
    assert steps(log_dir, "rl/step") == [0, 1, 2] and steps(log_dir, "rl/eval") == [0, 2, 3]
    inner = {"sync": "rl/sampling", "stream": "rl/sampling_and_training", "async": "rl/waiting_for_groups"}
    assert steps(log_dir, inner[mode]) == [0, 1, 2]
    assert "rl evals at step 3" in eval_report(log_dir, 3)


def test_async_never_trains_on_stale_groups(tmp_path):
    result = run_tiny(tmp_path, mode="async", max_steps_off_policy=0, groups_per_batch=2, max_steps=4)
    for row in train_rows(result):
        assert row["async/staleness_max"] == 0


def test_take_fresh_groups_discards_stale_ones():
    ready, slots = queue.Queue(), threading.Semaphore(0)
    for version, name in [(3, "a"), (5, "b"), (4, "c"), (6, "d"), (5, "e")]:
        ready.put((version, name))
    ready.put((6, GroupRolloutError("boom", [])))
    ready.put((6, "f"))
    # at step 6 with max 1 step off-policy: versions 5 and 6 are kept, 3 and 4 discarded
    kept, versions, results, discarded = take_fresh_groups(ready, slots, 6, 4, 1)
    assert kept == ["b", "d", "e", "f"] and versions == [5, 6, 5, 6] and discarded == 2
    assert len(results) == 7


class FlakyEnvBuilder(ArithmeticDatasetBuilder):
    """Arithmetic, but every 3rd env raises and every 5th reward is NaN."""

    async def __call__(self):
        train, test = await super().__call__()
        return _Flaky(train), test


class _Flaky:
    def __init__(self, inner):
        self.inner, self.count = inner, 0

    def __len__(self):
        return len(self.inner)

    def get_batch(self, i):
        return [_FlakyBuilder(b, self) for b in self.inner.get_batch(i)]


class _FlakyBuilder:
    def __init__(self, inner, owner):
        self.inner, self.owner = inner, owner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def make_envs(self):
        envs = await self.inner.make_envs()
        return [_FlakyEnv(e, self.owner) for e in envs]


class _FlakyEnv:
    """Env number k (in creation order) raises if k % 3 == 2 and returns a NaN reward if k % 4 == 0."""

    def __init__(self, inner, owner):
        self.inner, self.id = inner, owner.count
        owner.count += 1

    async def initial_observation(self):
        if self.id % 3 == 2:
            raise RuntimeError("env exploded")
        return await self.inner.initial_observation()

    async def step(self, action, *, extra=None):
        result = await self.inner.step(action, extra=extra)
        return dataclasses.replace(result, reward=math.nan) if self.id % 4 == 0 else result


def test_raising_envs_and_nan_rewards_are_counted_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.ENVS, "flaky", FlakyEnvBuilder)
    result = run_tiny(
        tmp_path,
        env="flaky",
        env_options={"n_test_problems": 4, "few_shot": 1},  # a new env starts without tiny()'s options
        **{
            "rollout.on_error": "min_viable",
            "rollout.min_successful": 1,
            "rollout.nan_reward": 0.0,
            "groups_per_batch": 3,
        },
    )
    rows = train_rows(result)
    assert len(rows) == 3
    assert sum(r["rollout_errors/total"] for r in rows) > 0
    assert any(r.get("env/all/nan_rewards", 0) > 0 for r in rows)
