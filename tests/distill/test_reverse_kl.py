"""Reverse-KL advantages and teacher-KL metrics: hand-computed values and a plain-loop reference."""

import numpy as np
import pytest

from jaxcook.distill.reverse_kl import reverse_kl_advantages, teacher_kl_metrics


def plain_reference(student, teacher, mask, adv, coef, discount):
    """A_t + sum_{k>=0} discount^k * (-coef * (s - t) * m)_{t+k}, written as two nested loops."""
    T = len(student)
    x = [-coef * (student[t] - teacher[t]) * mask[t] if mask[t] > 0 else 0.0 for t in range(T)]
    return [adv[t] + sum(discount**k * x[t + k] for k in range(T - t)) for t in range(T)]


def test_hand_computed_no_discount():
    # d = (s - t) * m = [0, (-1 + 1.5), (-2 + 1)] = [0, 0.5, -1]; A += -2 * d = [0, -1, 2]
    new, sums = reverse_kl_advantages(
        [np.array([0.0, -1.0, -2.0])],
        [np.array([0.0, -1.5, -1.0])],
        [np.array([0.0, 1.0, 1.0])],
        [np.array([0.25, 0.25, 0.25])],
        coef=2.0,
    )
    np.testing.assert_allclose(new[0], [0.25, -0.75, 2.25])
    assert sums == [(-0.5, 2.0)]  # 0.5 - 1 = -0.5 nats over 2 sampled tokens


def test_hand_computed_discount():
    # x = [0, -1, 2]; y_2 = 2, y_1 = -1 + 0.5 * 2 = 0, y_0 = 0 + 0.5 * 0 = 0
    new, _ = reverse_kl_advantages(
        [np.array([0.0, -1.0, -2.0])],
        [np.array([0.0, -1.5, -1.0])],
        [np.array([0.0, 1.0, 1.0])],
        [np.zeros(3)],
        coef=2.0,
        discount=0.5,
    )
    np.testing.assert_allclose(new[0], [0.0, 0.0, 2.0])


@pytest.mark.parametrize("discount", [0.0, 0.3, 0.9])
def test_matches_plain_reference(discount):
    rng = np.random.default_rng(0)
    lengths = [1, 7, 20]
    student = [-rng.random(n) * 3 for n in lengths]
    teacher = [-rng.random(n) * 3 for n in lengths]
    mask = [(rng.random(n) > 0.3).astype(np.float32) for n in lengths]
    adv = [rng.normal(size=n) for n in lengths]
    new, sums = reverse_kl_advantages(student, teacher, mask, adv, coef=0.7, discount=discount)
    for i in range(len(lengths)):
        ref = plain_reference(student[i], teacher[i], mask[i], adv[i], 0.7, discount)
        np.testing.assert_allclose(new[i], ref, rtol=1e-5, atol=1e-6)
        assert sums[i][0] == pytest.approx(float(((student[i] - teacher[i]) * mask[i]).sum()))
        assert sums[i][1] == float(mask[i].sum())


def test_teacher_equal_to_student_changes_nothing():
    rng = np.random.default_rng(1)
    lp = [-rng.random(9), -rng.random(4)]
    mask = [np.ones(9), np.r_[0, 0, 1, 1]]
    adv = [rng.normal(size=9).astype(np.float32), np.zeros(4, np.float32)]
    new, sums = reverse_kl_advantages(lp, [x.copy() for x in lp], mask, adv, coef=5.0, discount=0.5)
    for a, b in zip(new, adv):
        np.testing.assert_array_equal(a, b)  # exactly: the KL term is 0, not merely small
    assert [s for s, _ in sums] == [0.0, 0.0]


def test_prompt_positions_ignore_the_teacher():
    # a NaN teacher score on a prompt position (mask 0) must not leak into anything
    new, sums = reverse_kl_advantages(
        [np.array([0.0, -1.0])], [np.array([np.nan, -2.0])], [np.array([0.0, 1.0])], [np.zeros(2)], coef=1.0
    )
    np.testing.assert_array_equal(new[0], [0.0, -1.0])
    assert sums == [(1.0, 1.0)]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="datum 0: student logprobs"):
        reverse_kl_advantages([np.zeros(3)], [np.zeros(2)], [np.ones(3)], [np.zeros(3)], coef=1.0)
    with pytest.raises(ValueError, match="all must match"):
        reverse_kl_advantages([np.zeros(3)], [], [np.ones(3)], [np.zeros(3)], coef=1.0)
    with pytest.raises(ValueError, match="discount"):
        reverse_kl_advantages(
            [np.zeros(3)], [np.zeros(3)], [np.ones(3)], [np.zeros(3)], coef=1.0, discount=1.0
        )


def test_metrics_are_token_weighted_per_dataset():
    # dataset 0: (2 + 1) nats / (4 + 2) tokens = 0.5; dataset 1: -3 / 3 = -1; all: 0 / 9 = 0
    m = teacher_kl_metrics([(2.0, 4.0), (-3.0, 3.0), (1.0, 2.0)], [0, 1, 0])
    assert m == {"teacher_kl": 0.0, "teacher_kl/dataset_0": 0.5, "teacher_kl/dataset_1": -1.0}
    assert teacher_kl_metrics([(1.0, 2.0)], [0], prefix="test/teacher_kl") == {
        "test/teacher_kl": 0.5,
        "test/teacher_kl/dataset_0": 0.5,
    }
