"""Hand-built trajectories and envs for RL tests."""

from __future__ import annotations

from jaxcook.ports import TokensWithLogprobs
from jaxcook.rl.types import Trajectory, TrajectoryGroup, Transition
from jaxcook.types import ModelInput


def transition(ob, ac, logprobs=None, reward=0.0, done=False, stop_reason="stop", metrics=None):
    if logprobs is None:
        logprobs = [-0.1 * (i + 1) for i in range(len(ac))]
    return Transition(
        ModelInput.from_ints(ob),
        TokensWithLogprobs(list(ac), list(logprobs), stop_reason),
        reward,
        done,
        dict(metrics or {}),
    )


def single_turn(reward, ob=(1, 2, 3), ac=(4, 5), metrics=None):
    return Trajectory([transition(ob, ac, reward=reward, done=True, metrics=metrics)], ModelInput.empty())


def group(rewards, final_rewards=None, tags=()):
    trajs = [single_turn(r) for r in rewards]
    finals = list(final_rewards) if final_rewards is not None else [0.0] * len(rewards)
    return TrajectoryGroup(trajs, finals, [{} for _ in rewards], tags=list(tags))
