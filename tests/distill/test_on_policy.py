"""On-policy distillation on the tiny model: with the teacher equal to the student the KL is 0 (up to
the sampler's float error) and, with exactly equal log-probs, the update is exactly zero."""

import asyncio
import json

import jax
import numpy as np

import jaxcook
from jaxcook.distill.on_policy import TeacherKLShaper
from jaxcook.distill.prompts import PromptDatasetBuilder
from jaxcook.distill.teacher import Teacher, TeacherConfig
from jaxcook.lora import LoraConfig
from jaxcook.rl.rollouts import FailFast, RolloutConfig, do_batch_rollout
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.sampling.completers import LocalTokenCompleter
from jaxcook.types import AdamParams, Datum
from jaxcook.workflows.common import ModelOptions, make_setup
from jaxcook.workflows.rl_train import groups_to_data
from tests.reports import eval_report, spans, steps

TINY = ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4))
SMALL = {"tasks": ("chain_sum",), "n_per_task": 12, "test_size": 4}


def unchanged_by_a_step(client, data) -> bool:
    """Whether one importance-sampling step on `data` leaves every trainable weight bit-identical."""
    before = client.snapshot_params().result()
    keys = ("target_tokens", "logprobs", "advantages")
    client.forward_backward(
        [Datum(d.model_input, {k: d.loss_fn_inputs[k] for k in keys}) for d in data], "importance_sampling"
    ).result()
    client.optim_step(AdamParams(learning_rate=1e-2)).result()
    after = client.snapshot_params().result()
    return all(
        jax.tree.leaves(
            jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), before, after)
        )
    )


def test_teacher_equal_to_student_zero_kl_and_zero_update():
    setup = make_setup(TINY, max_length=256, batch_size=4)
    teacher = Teacher.load(TeacherConfig(model=TINY), max_length=256, batch_size=4)
    try:
        builder = PromptDatasetBuilder(
            sources=({"dataset_options": SMALL},), groups_per_batch=2, group_size=2, renderer=setup.renderer
        )
        train, _ = asyncio.run(builder())
        sampler = LocalSamplingClient.from_training_client(setup.client, seed=0)
        policy = LocalTokenCompleter(sampler, 6, 1.0)
        rollouts = asyncio.run(
            do_batch_rollout(train.get_batch(0), policy, FailFast(), RolloutConfig(max_tokens=6))
        )
        sampler.close()
        data, meta, _ = groups_to_data(rollouts.groups, remove_constant=False)
        assert all(not d.loss_fn_inputs["advantages"].any() for d in data)  # reward 0: no env advantage
        shaper = TeacherKLShaper([teacher], student_renderer_name=setup.renderer_name, coef=1.0)

        # the sampler's log-probs: the teacher (same weights) disagrees only by float error
        noisy, metrics = shaper(data, meta)
        assert abs(metrics["teacher_kl"]) < 1e-3

        # log-probs exactly the teacher's: every advantage is exactly 0 and a step changes nothing
        scored = teacher.score(data)
        exact = [
            Datum(d.model_input, {**d.loss_fn_inputs, "logprobs": lp * d.loss_fn_inputs["mask"]})
            for d, lp in zip(data, scored)
        ]
        shaped, metrics = shaper(exact, meta)
        assert metrics["teacher_kl"] == 0.0
        assert all(not d.loss_fn_inputs["advantages"].any() for d in shaped)
        before = setup.client.snapshot_params().result()
        keys = ("target_tokens", "logprobs", "advantages")
        batch = [Datum(d.model_input, {k: d.loss_fn_inputs[k] for k in keys}) for d in shaped]
        setup.client.forward_backward(batch, "importance_sampling").result()
        setup.client.optim_step(AdamParams(learning_rate=1e-2)).result()
        after = setup.client.snapshot_params().result()
        assert all(
            jax.tree.leaves(
                jax.tree.map(lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), before, after)
            )
        )
    finally:
        teacher.close()
        setup.client.close()


def test_two_teachers_one_batch_student_as_teacher_has_zero_kl(tmp_path):
    # dataset 0: the teacher is the student itself; dataset 1: the student behind a system prompt
    # (re-rendered prompts), a teacher the student does not equal
    same = {
        "dataset_options": SMALL,
        "groups_per_batch": 1,
        "teacher": {"model": {"name": TINY.name, "lora": {"rank": 4}}},
    }
    prompted = {**same, "teacher": {**same["teacher"], "system_prompt": "Answer in French. " * 20}}
    overrides = {"run.log_dir": str(tmp_path / "run"), "max_steps": 2, "datasets": [same, prompted]}
    result = jaxcook.run("distill", tiny=True, teacher_sft_steps=0, **overrides)
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2]
    first, last = rows[0], rows[-1]
    for key in (
        "test/teacher_kl",
        "test/teacher_kl/dataset_0",
        "test/teacher_kl/dataset_1",
        "test/teacher_nll",
    ):
        assert key in first and key in last  # before the first step and after the last
    # before any update: dataset 0's teacher is the student (float error only), dataset 1's is not
    for kl in ("test/teacher_kl", "teacher_kl"):
        assert abs(first[f"{kl}/dataset_0"]) < 1e-3
        assert abs(first[f"{kl}/dataset_1"]) > 1e-3
    assert abs(rows[1]["teacher_kl/dataset_1"]) > 1e-3
    assert result.final_checkpoint.endswith("checkpoints/2")
    assert json.loads((tmp_path / "run" / "distill_config.json").read_text())["kl_penalty_coef"] == 1.0
    # trace: the RL iterations, the teachers' scoring of each batch, the two held-out evals
    assert steps(tmp_path / "run", "rl/step") == [0, 1] and steps(tmp_path / "run", "rl/eval") == [0, 2]
    assert len(spans(tmp_path / "run")["distill/teacher_logprobs"]) == 2
    page = eval_report(tmp_path / "run", 2)
    assert "test/teacher_kl over 8 held-out samples" in page and "<th>teacher_kl</th>" in page
