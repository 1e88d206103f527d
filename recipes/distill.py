"""On-policy distillation (reverse KL) of an SFT-trained SmolLM2-135M teacher into the base model.

The default needs nothing but the embedded model: when the first dataset's teacher has no
checkpoint, the `sft` recipe first trains one (`teacher_sft_steps` LoRA steps on the same
offline reasoning-gym math chats, into `<log_dir>/teacher_sft`, reused when already there); then
the base SmolLM2-135M-Instruct student samples answers to the training questions and learns from
the teacher's per-token log-probs. `test/teacher_kl` (held-out questions, nats per sampled token)
is logged before the first and after the last step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from jaxcook.distill.on_policy import DistillDatasetConfig, OnPolicyConfig, train
from jaxcook.distill.teacher import TeacherConfig
from jaxcook.lora import LoraConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions

log = logging.getLogger(__name__)


# Two-to-four-term sums: prompts of <= 72 tokens and answers of <= 56, so a whole sequence fits
# the 128-token bucket and a step stays short on a CPU.
CHAIN_SUM = {"tasks": ("chain_sum",), "test_size": 64}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(OnPolicyConfig):
    datasets: tuple[DistillDatasetConfig, ...] = (
        DistillDatasetConfig(dataset_options=dict(CHAIN_SUM), groups_per_batch=8),
    )
    group_size: int = 2
    max_tokens: int = 56
    max_steps: int | None = 20
    optim: OptimConfig = OptimConfig(learning_rate=1e-3, lr_schedule="constant")
    teacher_checkpoint: str | None = None  # shorthand for datasets[0].teacher.model.load_checkpoint
    teacher_sft_steps: int = 30  # SFT steps of the teacher made when none is given; 0 = never make one
    teacher_sft_learning_rate: float = 1e-3


def tiny() -> Config:
    """2-layer random student and teacher (a 3-step SFT of it), 3 iterations: seconds on a CPU."""
    model = ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4))
    return Config(
        model=model,
        datasets=(
            DistillDatasetConfig(
                dataset_options={"n_per_task": 12, "test_size": 8},
                groups_per_batch=2,
                teacher=TeacherConfig(model=model),
            ),
        ),
        group_size=2,
        max_tokens=8,
        max_steps=3,
        n_eval_prompts=4,
        teacher_sft_steps=3,
        teacher_sft_learning_rate=1e-2,
        optim=OptimConfig(learning_rate=1e-3, lr_schedule="constant"),
        run=RunOptions(log_dir="runs/distill-tiny", save_every=2),
    )


def finished_teacher(log_dir: Path, steps: int) -> str | None:
    """The final checkpoint of a finished `steps`-step teacher run in `log_dir`, else None (an
    unfinished one is resumed by rerunning it)."""
    from jaxcook.workflows.training_run import final_checkpoint

    record = final_checkpoint(log_dir)
    if record is None:
        return None
    path = Path(record["state_path"])
    try:  # the checkpoint's JSON meta (written by TrainingRun.save): the run config it was made with
        meta = json.loads((path / "meta" / "metadata").read_text())
    except (OSError, ValueError):
        return None
    return str(path) if meta.get("config", {}).get("max_steps") == steps else None


def make_teacher(cfg: Config) -> str:
    """Train (or reuse) the SFT teacher of the first dataset; returns its final checkpoint."""
    import jaxcook
    from jaxcook.workflows.supervised import SupervisedConfig

    first = cfg.datasets[0]
    log_dir = Path(cfg.run.log_dir) / "teacher_sft"
    if (done := finished_teacher(log_dir, cfg.teacher_sft_steps)) is not None:
        log.info("reusing the SFT teacher %s", done)
        return done
    sft = SupervisedConfig(
        model=first.teacher.model,
        dataset=first.dataset,
        dataset_options=dict(first.dataset_options),
        max_steps=cfg.teacher_sft_steps,
        optim=OptimConfig(learning_rate=cfg.teacher_sft_learning_rate),
        eval_every=0,
        seed=cfg.seed,
        run=RunOptions(log_dir=str(log_dir), save_every=0),
    )
    return jaxcook.run_config("sft", sft).final_checkpoint


def main(cfg: Config) -> RunResult:
    from jaxcook.logging.run_dir import check_log_dir

    teacher = cfg.datasets[0].teacher
    if cfg.teacher_checkpoint is not None:
        teacher = dataclasses.replace(
            teacher, model=dataclasses.replace(teacher.model, load_checkpoint=cfg.teacher_checkpoint)
        )
        cfg = dataclasses.replace(
            cfg, datasets=(dataclasses.replace(cfg.datasets[0], teacher=teacher), *cfg.datasets[1:])
        )
    if cfg.teacher_sft_steps and teacher.model.load_checkpoint is None and teacher.system_prompt is None:
        # The teacher lives in the log dir: apply its exists-policy now, before the teacher is made.
        check_log_dir(cfg.run.log_dir, cfg.run.if_log_dir_exists)
        path = make_teacher(cfg)
        with_ckpt = dataclasses.replace(
            teacher, model=dataclasses.replace(teacher.model, load_checkpoint=path)
        )
        datasets = tuple(
            dataclasses.replace(d, teacher=with_ckpt) if d.teacher == teacher else d for d in cfg.datasets
        )
        run = dataclasses.replace(cfg.run, if_log_dir_exists="resume")
        cfg = dataclasses.replace(cfg, datasets=datasets, run=run)
    return train(cfg)
