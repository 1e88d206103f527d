"""The teacher-KL shaper with fake teachers: routing by source tag, re-rendering, hand-computed advantages."""

import json

import numpy as np
import pytest

from jaxcook.distill.on_policy import TeacherKLShaper
from jaxcook.distill.prompts import PROMPT_LOG_KEY
from jaxcook.rl.completers import TokensWithLogprobs
from jaxcook.rl.data_processing import assemble_training_data
from jaxcook.rl.types import Trajectory, TrajectoryGroup, Transition
from jaxcook.types import ModelInput

PROMPT = [{"role": "user", "content": "hi"}]


class FakeTeacher:
    """Scores every target `value`; re-renders when `rerender` (then its prompt is 2 tokens)."""

    def __init__(self, value, *, rerender=False, renderer_name="chatml"):
        self.value, self.rerender, self.renderer_name, self.name = (
            value,
            rerender,
            renderer_name,
            f"fake{value}",
        )
        self.completion_calls = []

    def rerenders(self, student_renderer_name):
        return self.rerender

    def score(self, data):
        return [np.full(len(d.loss_fn_inputs["target_tokens"]), self.value, np.float32) for d in data]

    def score_completions(self, prompts, completions):
        self.completion_calls.append((prompts, completions))
        return [np.full(len(c), self.value, np.float32) for c in completions]


def trajectory(ob, ac, logprobs, *, messages=PROMPT, turns=1):
    logs = {PROMPT_LOG_KEY: json.dumps(messages)}
    transitions = [
        Transition(
            ModelInput.from_ints(ob),
            TokensWithLogprobs(list(ac), list(logprobs), "stop"),
            0.0,
            False,
            {},
            logs,
        )
    ]
    for _ in range(turns - 1):  # a later turn whose observation extends the sequence
        prev = transitions[-1]
        ob = prev.ob.to_ints() + list(prev.ac.tokens) + [7]
        transitions.append(
            Transition(
                ModelInput.from_ints(ob), TokensWithLogprobs(list(ac), list(logprobs), "stop"), 0.0, False
            )
        )
    return Trajectory(transitions, ModelInput.empty())


def batch(groups):
    """Datums and meta as the RL workflow builds them (env rewards 0: advantages start at 0)."""
    data, where = assemble_training_data(
        groups, [np.zeros(len(g.trajectories_G), np.float32) for g in groups]
    )
    meta = [
        {
            **w,
            "tags": groups[w["group_idx"]].tags,
            "trajectory": groups[w["group_idx"]].trajectories_G[w["traj_idx"]],
        }
        for w in where
    ]
    return data, meta


def group(trajs, tag):
    return TrajectoryGroup(trajs, [0.0] * len(trajs), [{} for _ in trajs], tags=[tag])


def test_two_teachers_route_by_tag_and_log_per_dataset():
    # datum 0 (dataset_0): ob (1, 2), ac (3, 4) with student lp (-1, -2); teacher 0 scores -0.5 everywhere
    #   targets (2, 3, 4), mask (0, 1, 1): d = (0, -1 + 0.5, -2 + 0.5) = (0, -0.5, -1.5); A = -2 d = (0, 1, 3)
    # datum 1 (dataset_1): ob (1,), ac (5, 6, 7) with lp (-1, -1, -1); teacher 1 scores -3
    #   targets (5, 6, 7), mask (1, 1, 1): d = (2, 2, 2); A = (-4, -4, -4)
    g0 = group([trajectory([1, 2], [3, 4], [-1.0, -2.0])], "dataset_0")
    g1 = group([trajectory([1], [5, 6, 7], [-1.0, -1.0, -1.0])], "dataset_1")
    data, meta = batch([g0, g1])
    shaper = TeacherKLShaper([FakeTeacher(-0.5), FakeTeacher(-3.0)], student_renderer_name="chatml", coef=2.0)
    new, metrics = shaper(data, meta)
    np.testing.assert_allclose(new[0].loss_fn_inputs["advantages"], [0.0, 1.0, 3.0])
    np.testing.assert_allclose(new[1].loss_fn_inputs["advantages"], [-4.0, -4.0, -4.0])
    # dataset_0: -2 nats / 2 tokens = -1; dataset_1: 6 / 3 = 2; all: 4 / 5 = 0.8
    assert metrics == pytest.approx(
        {"teacher_kl": 0.8, "teacher_kl/dataset_0": -1.0, "teacher_kl/dataset_1": 2.0}
    )
    for key in ("target_tokens", "logprobs", "mask"):  # only the advantages change
        np.testing.assert_array_equal(new[0].loss_fn_inputs[key], data[0].loss_fn_inputs[key])


def test_rerendering_teacher_scores_completions_and_aligns_them_to_the_mask():
    # ob (1, 2, 3), ac (8, 9): mask over targets (2, 3, 8, 9) is (0, 0, 1, 1)
    messages = [{"role": "system", "content": "s"}, *PROMPT]
    data, meta = batch([group([trajectory([1, 2, 3], [8, 9], [-1.0, -1.0], messages=messages)], "dataset_0")])
    teacher = FakeTeacher(-1.25, rerender=True)
    new, metrics = TeacherKLShaper([teacher], student_renderer_name="chatml", coef=1.0)(data, meta)
    assert teacher.completion_calls == [([messages], [[8, 9]])]  # the logged prompt, the sampled tokens
    np.testing.assert_allclose(new[0].loss_fn_inputs["advantages"], [0.0, 0.0, -0.25, -0.25])  # -(-1 + 1.25)
    assert metrics["teacher_kl"] == pytest.approx(0.25)


def test_rerendering_refuses_multi_turn_trajectories():
    data, meta = batch([group([trajectory([1, 2], [3, 4], [-1.0, -1.0], turns=2)], "dataset_0")])
    shaper = TeacherKLShaper([FakeTeacher(0.0, rerender=True)], student_renderer_name="chatml", coef=1.0)
    with pytest.raises(ValueError, match="single-turn trajectories only; this one has 2 turns"):
        shaper(data, meta)
    # a teacher that reads the student's tokens as they are scores multi-turn datums fine
    TeacherKLShaper([FakeTeacher(0.0)], student_renderer_name="chatml", coef=1.0)(data, meta)


def test_untagged_groups_need_a_single_teacher():
    data, meta = batch([group([trajectory([1], [2], [-1.0])], "other")])
    two = TeacherKLShaper([FakeTeacher(0.0), FakeTeacher(0.0)], student_renderer_name="chatml", coef=1.0)
    with pytest.raises(ValueError, match="must say which source"):
        two(data, meta)
    _, metrics = TeacherKLShaper([FakeTeacher(-1.0)], student_renderer_name="chatml", coef=1.0)(data, meta)
    assert metrics["teacher_kl/dataset_0"] == pytest.approx(0.0)


def test_extra_metrics_are_reported_once():
    data, meta = batch([group([trajectory([1], [2], [-1.0])], "dataset_0")])
    shaper = TeacherKLShaper(
        [FakeTeacher(-1.0)], student_renderer_name="chatml", coef=1.0, extra_metrics={"test/teacher_kl": 3.0}
    )
    assert shaper(data, meta)[1]["test/teacher_kl"] == 3.0
    assert "test/teacher_kl" not in shaper(data, meta)[1]
