"""Per-iteration trajectory metrics, with hand-computed values."""

import pytest

from jaxcook.rl.metrics import compute_trajectory_metrics
from jaxcook.rl.types import Trajectory, TrajectoryGroup
from jaxcook.types import ModelInput
from tests.rl.helpers import single_turn, transition


def _group(rewards, correct, tags):
    trajs = [single_turn(r, metrics={"correct": c}) for r, c in zip(rewards, correct)]
    return TrajectoryGroup(trajs, [0.0] * len(trajs), [{} for _ in trajs], tags=list(tags))


def test_env_all_metrics_hand_values():
    g_mixed = _group([1.0, 0.0], [1.0, 0.0], ["a"])
    g_good = _group([1.0, 1.0], [1.0, 1.0], ["b"])
    multi = Trajectory(
        [transition([1, 2], [3, 4, 5]), transition([1, 2, 3, 4, 5, 6], [7], stop_reason="length", done=True)],
        ModelInput.empty(),
        stop_reason="max_tokens",
    )
    g_bad = TrajectoryGroup([multi, single_turn(0.0)], [0.2, 0.2], [{"grp": 1.0}, {"grp": 3.0}], tags=["b"])
    m = compute_trajectory_metrics([g_mixed, g_good, g_bad])
    # totals: [1, 0], [1, 1], [0.2, 0.2] -> mean 3.4 / 6
    assert m["env/all/reward/total"] == pytest.approx(3.4 / 6)
    # groups: mixed, all good (1 >= 0.5), all bad (0.2 < 0.5)
    assert m["env/all/by_group/frac_mixed"] == pytest.approx(1 / 3)
    assert m["env/all/by_group/frac_all_good"] == pytest.approx(1 / 3)
    assert m["env/all/by_group/frac_all_bad"] == pytest.approx(1 / 3)
    # turns: 5 single-turn (ob 3, ac 2) + 2 turns (ob 2 and 6, ac 3 and 1)
    assert m["env/all/total_turns"] == 7 and m["env/all/total_episodes"] == 6
    assert m["env/all/total_ac_tokens"] == 5 * 2 + 3 + 1
    assert m["env/all/total_ob_tokens"] == 5 * 3 + 2 + 6
    assert m["env/all/ac_tokens_per_turn"] == pytest.approx(14 / 7)
    assert m["env/all/turns_per_episode"] == pytest.approx(7 / 6)
    assert m["env/all/ac_truncated"] == pytest.approx(1 / 7)
    # correct: mean over the 4 transitions reporting it; grp over the 2 group entries
    assert m["env/all/correct"] == pytest.approx(3 / 4)
    assert m["env/all/grp"] == pytest.approx(2.0)
    assert m["env/all/stop/max_tokens"] == pytest.approx(1 / 6)
    # tags split the batch: "a" = g_mixed, "b" = g_good + g_bad
    assert m["env/a/reward/total"] == pytest.approx(0.5)
    assert m["env/b/by_group/frac_all_good"] == pytest.approx(0.5)
    assert m["env/b/total_episodes"] == 4


def test_no_per_tag_metrics_when_every_group_has_the_tag():
    m = compute_trajectory_metrics([_group([1.0, 0.0], [1, 0], ["x"]), _group([1.0, 1.0], [1, 1], ["x"])])
    assert not any(k.startswith("env/x/") for k in m)
    with pytest.raises(ValueError, match="tag lists"):
        compute_trajectory_metrics([_group([1.0], [1], [])], [])
