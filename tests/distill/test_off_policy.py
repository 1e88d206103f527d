"""Off-policy top-K distillation: soft datums from a real teacher, a tiny run, and a refused teacher."""

import dataclasses

import numpy as np
import pytest

from jaxcook.distill.off_policy import OffPolicyConfig, soft_target_data, train
from jaxcook.distill.teacher import Teacher, TeacherConfig
from jaxcook.lora import LoraConfig
from jaxcook.types import Datum, ModelInput
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions

TINY = ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4))


def tiny_config(tmp_path, **overrides) -> OffPolicyConfig:
    base = OffPolicyConfig(
        model=TINY,
        teacher=TeacherConfig(model=TINY),
        topk=4,
        dataset_options={"tasks": ("chain_sum",), "n_per_task": 12, "test_size": 4},
        max_length=128,
        batch_size=4,
        max_steps=2,
        eval_every=0,
        optim=OptimConfig(learning_rate=1e-3, lr_schedule="constant"),
        run=RunOptions(log_dir=str(tmp_path / "run"), save_every=0),
    )
    return dataclasses.replace(base, **overrides)


def test_soft_datums_carry_the_teachers_renormalised_topk():
    teacher = Teacher.load(TeacherConfig(model=TINY), max_length=128, batch_size=2)
    try:
        tokens = teacher.renderer.build_generation_prompt([{"role": "user", "content": "1 + 2 ="}]).to_ints()
        weights = np.zeros(len(tokens) - 1, np.float32)
        weights[-3:] = [0.5, 0.25, 0.25]
        datum = Datum(
            ModelInput.from_ints(tokens[:-1]), {"target_tokens": np.asarray(tokens[1:]), "weights": weights}
        )
        (soft,) = soft_target_data(teacher, [datum], k=3)
        ((ids, lp),) = teacher.topk([datum], k=3)
        assert soft.loss_fn_inputs["target_tokens"].shape == (len(tokens) - 1, 3)
        np.testing.assert_array_equal(soft.loss_fn_inputs["target_tokens"], ids)
        q = np.exp(lp) / np.exp(lp).sum(-1, keepdims=True)  # renormalised over the 3
        np.testing.assert_allclose(soft.loss_fn_inputs["weights"], weights[:, None] * q, rtol=1e-5, atol=1e-7)
        assert not soft.loss_fn_inputs["weights"][:-3].any()  # prompt positions train nothing
    finally:
        teacher.close()


@pytest.mark.slow
def test_tiny_off_policy_run_trains_on_soft_targets(tmp_path):
    result = train(tiny_config(tmp_path))
    rows = [r for r in result.metrics if "train/nll" in r]
    assert len(rows) == 2
    for r in rows:
        # a random 49k-token model spreads its mass: cross-entropy near ln(49152) = 10.8 per weight
        assert 5.0 < r["train/nll"] < 12.0
    assert "test/nll" in result.metrics[-1]
    assert result.final_checkpoint.endswith("checkpoints/2")


def test_a_teacher_in_another_format_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, teacher=TeacherConfig(model=TINY, system_prompt="Be brief."))
    with pytest.raises(ValueError, match="use on-policy distillation"):
        train(cfg)
