"""Advantages, constant-group removal and trajectory -> datum assembly (layout checked exactly)."""

import numpy as np
import pytest

from jaxcook.rl.data_processing import (
    assemble_training_data,
    compute_advantages,
    remove_constant_reward_groups,
    select_loss_inputs,
    trajectory_to_data,
)
from jaxcook.rl.types import Trajectory, TrajectoryGroup
from jaxcook.types import ModelInput
from tests.rl.helpers import group, single_turn, transition


def test_advantages_are_group_centred_without_std():
    groups = [group([1.0, 0.0, 0.0, 1.0]), group([2.0, 0.0, 1.0], final_rewards=[0.0, 3.0, 0.0])]
    adv = compute_advantages(groups)
    # group 0: mean 0.5 -> [0.5, -0.5, -0.5, 0.5] (std would make it +-1)
    np.testing.assert_allclose(adv[0], [0.5, -0.5, -0.5, 0.5])
    # group 1 totals = step + final = [2, 3, 1], mean 2 -> [0, 1, -1]
    np.testing.assert_allclose(adv[1], [0.0, 1.0, -1.0])


def test_remove_constant_reward_groups():
    g_const, g_mixed, g_const2 = group([1.0, 1.0]), group([0.0, 1.0]), group([0.0, 0.0])
    assert remove_constant_reward_groups([g_const, g_mixed, g_const2]) == [g_mixed]
    # every group constant -> keep the first so the batch is not empty
    assert remove_constant_reward_groups([g_const2, g_const]) == [g_const2]
    assert remove_constant_reward_groups([]) == []


def _arrays(datum):
    return {k: v.tolist() for k, v in datum.loss_fn_inputs.items()} | {"input": datum.model_input.to_ints()}


def test_single_turn_layout_is_shifted():
    traj = single_turn(1.0, ob=(1, 2, 3), ac=(4, 5))  # logprobs -0.1, -0.2
    (d,) = trajectory_to_data(traj, 0.5)
    a = _arrays(d)
    # seq = [1,2,3,4,5]; input = seq[:-1]; every per-token array is its value at seq[1:]
    assert a["input"] == [1, 2, 3, 4]
    assert a["target_tokens"] == [2, 3, 4, 5]
    np.testing.assert_allclose(a["logprobs"], [0, 0, -0.1, -0.2], atol=1e-7)
    np.testing.assert_allclose(a["advantages"], [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(a["mask"], [0, 0, 1, 1])
    assert d.loss_fn_inputs["target_tokens"].dtype == np.int32


def test_multi_turn_merges_when_observations_extend():
    t1 = transition([1, 2, 3], [4, 5], [-0.1, -0.2])
    t2 = transition([1, 2, 3, 4, 5, 6, 7], [8], [-0.3], done=True)
    (d,) = trajectory_to_data(Trajectory([t1, t2], ModelInput.empty()), -1.0)
    a = _arrays(d)
    # seq = 1 2 3 | 4 5 (ac) | 6 7 (new obs suffix only) | 8 (ac)
    assert a["input"] == [1, 2, 3, 4, 5, 6, 7]
    assert a["target_tokens"] == [2, 3, 4, 5, 6, 7, 8]
    np.testing.assert_allclose(a["logprobs"], [0, 0, -0.1, -0.2, 0, 0, -0.3], atol=1e-7)
    np.testing.assert_allclose(a["advantages"], [0, 0, -1, -1, 0, 0, -1])
    np.testing.assert_allclose(a["mask"], [0, 0, 1, 1, 0, 0, 1])


def test_multi_turn_splits_when_observation_rewrites_history():
    t1 = transition([1, 2, 3], [4, 5], [-0.1, -0.2])
    t2 = transition([9, 2, 3, 4, 5, 6], [8], [-0.3], done=True)  # first token differs
    d1, d2 = trajectory_to_data(Trajectory([t1, t2], ModelInput.empty()), 2.0)
    a1, a2 = _arrays(d1), _arrays(d2)
    assert a1["input"] == [1, 2, 3, 4] and a1["target_tokens"] == [2, 3, 4, 5]
    np.testing.assert_allclose(a1["mask"], [0, 0, 1, 1])
    assert a2["input"] == [9, 2, 3, 4, 5, 6] and a2["target_tokens"] == [2, 3, 4, 5, 6, 8]
    np.testing.assert_allclose(a2["mask"], [0, 0, 0, 0, 0, 1])
    np.testing.assert_allclose(a2["advantages"], [0, 0, 0, 0, 0, 2])
    np.testing.assert_allclose(a2["logprobs"], [0, 0, 0, 0, 0, -0.3], atol=1e-7)


def _reference_datums(traj, adv):
    """Plain reference: a list of (token, logprob, advantage, mask) rows per datum."""
    datums, rows = [], []
    for tr in traj.transitions:
        ob = tr.ob.to_ints()
        seq = [r[0] for r in rows]
        if rows and ob[: len(seq)] == seq:
            ob = ob[len(seq) :]
        elif rows:
            datums.append(rows)
            rows = []
        rows = rows + [(t, 0.0, 0.0, 0.0) for t in ob]
        rows = rows + [(t, lp, adv, 1.0) for t, lp in zip(tr.ac.tokens, tr.ac.logprobs)]
    datums.append(rows)
    out = []
    for rows in datums:
        cols = list(zip(*rows))
        out.append(
            {
                "input": list(cols[0][:-1]),
                "target_tokens": list(cols[0][1:]),
                "logprobs": list(cols[1][1:]),
                "advantages": list(cols[2][1:]),
                "mask": list(cols[3][1:]),
            }
        )
    return out


@pytest.mark.parametrize("seed", range(5))
def test_random_multi_turn_matches_reference(seed):
    rng = np.random.default_rng(seed)
    transitions, history = [], []
    for turn in range(int(rng.integers(2, 6))):
        if turn == 0 or rng.random() < 0.3:  # start afresh (history rewritten)
            ob = rng.integers(0, 50, int(rng.integers(1, 6))).tolist()
        else:
            ob = history + rng.integers(0, 50, int(rng.integers(0, 4))).tolist()
        ac = rng.integers(0, 50, int(rng.integers(1, 5))).tolist()
        transitions.append(transition(ob, ac, rng.normal(size=len(ac)).tolist()))
        history = ob + ac
    traj = Trajectory(transitions, ModelInput.empty())
    got = [_arrays(d) for d in trajectory_to_data(traj, 0.75)]
    want = _reference_datums(traj, 0.75)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["input"] == w["input"] and g["target_tokens"] == w["target_tokens"]
        for key in ("logprobs", "advantages", "mask"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-6, atol=1e-6)


def test_action_without_logprobs_is_an_error():
    traj = single_turn(1.0)
    traj.transitions[0].ac = type(traj.transitions[0].ac)([4, 5], None, "stop")
    with pytest.raises(ValueError, match="no logprobs"):
        trajectory_to_data(traj, 1.0)


def test_assemble_training_data_metadata_and_overflow_trajectories():
    g0 = group([1.0, 0.0])
    overflow = Trajectory([], ModelInput.empty(), "context_overflow", terminal_reward=-1.0)
    g1 = TrajectoryGroup([single_turn(1.0), overflow], [0.0, 0.0], [{}, {}])
    data, meta = assemble_training_data([g0, g1], compute_advantages([g0, g1]))
    # the overflow trajectory has nothing to train on; its reward still moved the group mean:
    # g1 totals [1, -1], mean 0 -> advantage of the first = 1
    assert meta == [
        {"group_idx": 0, "traj_idx": 0},
        {"group_idx": 0, "traj_idx": 1},
        {"group_idx": 1, "traj_idx": 0},
    ]
    np.testing.assert_allclose(data[2].loss_fn_inputs["advantages"], [0, 0, 1, 1])
    stripped = select_loss_inputs(data)
    assert set(stripped[0].loss_fn_inputs) == {"target_tokens", "logprobs", "advantages"}
    with pytest.raises(ValueError, match="advantage"):
        assemble_training_data([g0], [np.zeros(3)])
