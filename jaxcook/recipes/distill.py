"""On-policy distillation (reverse KL) of an SFT-trained SmolLM2-135M teacher into the base model.

The teacher, in order of precedence:
- `teacher_model=NAME` (a registry name, hub id or local folder): that model as it is, no training;
- `teacher_run=RUN_ID`: the final checkpoint of a run in the run registry (`python -m jaxcook.runs
  list`), on the model that run trained;
- `teacher_checkpoint=PATH`: a checkpoint of the teacher's configured model;
- otherwise (the default, needing nothing but the embedded model) the `sft` recipe first trains
  one: `teacher_sft_steps` LoRA steps on the same offline reasoning-gym math chats, into
  `<log_dir>/teacher_sft`, reused when the registry has that teacher's finished run.
Then the base SmolLM2-135M-Instruct student samples answers to the training questions and learns
from the teacher's per-token log-probs. `test/teacher_kl` (held-out questions, nats per sampled
token) is logged before the first and after the last step.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from jaxcook.config_aliases import aliases
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
    dataset: str | None = None  # shorthand for datasets[0].dataset (its dataset_options are dropped)
    teacher_model: str | None = None  # a pretrained teacher, used as it is (no SFT teacher is trained)
    teacher_run: str | None = None  # a registered run (id or prefix) whose final checkpoint teaches
    teacher_checkpoint: str | None = None  # shorthand for datasets[0].teacher.model.load_checkpoint
    teacher_sft_steps: int = 30  # SFT steps of the teacher made when none is given; 0 = never make one
    teacher_sft_learning_rate: float = 1e-3


ALIASES = aliases(
    student_model="model.name", epochs=None, batch_size=None, max_length=None, batches="max_steps"
)


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


def finished_teacher(log_dir: str | os.PathLike, steps: int) -> str | None:
    """The final checkpoint of a finished `steps`-step `sft` run in `log_dir`, found in the run
    registry and checked against its recorded sha256 (a local one); else None (an unfinished
    teacher is resumed by rerunning it)."""
    from jaxcook.runs.facts import checkpoint_sha256, normalize_path
    from jaxcook.runs.registry import RunRegistry

    registry = RunRegistry.open()
    if registry is None:
        return None
    with registry:
        for run in registry.runs(recipe="sft", status="finished", log_dir=normalize_path(str(log_dir))):
            final = registry.final_checkpoint(run["id"])
            if run["config"].get("max_steps") != steps or final is None:
                continue
            if final["sha256"] is None or checkpoint_sha256(final["path"]) == final["sha256"]:
                return final["path"]  # (no digest: a remote checkpoint, trusted as recorded)
            log.warning("teacher checkpoint %s changed since run %s wrote it", final["path"], run["id"])
    return None


def registered_teacher(run_id: str, like: ModelOptions) -> ModelOptions:
    """The model options of the final checkpoint of registered run `run_id` (model, LoRA, renderer)."""
    from jaxcook.config import config_from_dict
    from jaxcook.runs.registry import RegistryError, RunRegistry

    registry = RunRegistry.open()
    if registry is None:
        raise RegistryError("teacher_run needs the run registry, which is off (JAXCOOK_REGISTRY=off)")
    with registry:
        run = registry.get(run_id)
        final = registry.final_checkpoint(run["id"])
    if run["status"] != "finished" or final is None:
        raise RegistryError(f"teacher_run {run['id']!r} is {run['status']} and has no final checkpoint")
    model = config_from_dict(ModelOptions, run["config"]["model"])
    return dataclasses.replace(model, load_checkpoint=final["path"], mesh=like.mesh)


def teacher_log_dir(cfg: Config) -> str:
    """Where the SFT teacher made for this run logs: `<log_dir>/teacher_sft` (a folder or a URL)."""
    from jaxcook.storage import join

    return join(cfg.run.log_dir, "teacher_sft")


def make_teacher(cfg: Config) -> str:
    """Train (or reuse) the SFT teacher of the first dataset; returns its final checkpoint."""
    import jaxcook
    from jaxcook.workflows.supervised import SupervisedConfig

    first = cfg.datasets[0]
    log_dir = teacher_log_dir(cfg)
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
        run=RunOptions(log_dir=log_dir, save_every=0),
    )
    return jaxcook.run_config("sft", sft).final_checkpoint


def with_teacher(cfg: Config, teacher: TeacherConfig) -> Config:
    """`cfg` with `teacher` for every source that had the first source's teacher."""
    first = cfg.datasets[0].teacher
    datasets = tuple(
        dataclasses.replace(d, teacher=teacher) if d.teacher == first else d for d in cfg.datasets
    )
    return dataclasses.replace(cfg, datasets=datasets)


def main(cfg: Config) -> RunResult:
    from jaxcook.runs.hook import resolved_config
    from jaxcook.workflows.run_storage import apply_log_dir_policy

    first = cfg.datasets[0]
    if cfg.dataset is not None and cfg.dataset != first.dataset:
        source = dataclasses.replace(first, dataset=cfg.dataset, dataset_options={})
        cfg = dataclasses.replace(cfg, datasets=(source, *cfg.datasets[1:]))
    teacher = cfg.datasets[0].teacher
    if cfg.teacher_model is not None:
        model = dataclasses.replace(
            teacher.model,
            name=cfg.teacher_model,
            renderer=None,
            lora=teacher.model.lora if cfg.teacher_checkpoint else None,
            load_checkpoint=None,
        )
        teacher = dataclasses.replace(teacher, model=model)
    elif cfg.teacher_run is not None:
        teacher = dataclasses.replace(teacher, model=registered_teacher(cfg.teacher_run, teacher.model))
    if cfg.teacher_checkpoint is not None:
        teacher = dataclasses.replace(
            teacher, model=dataclasses.replace(teacher.model, load_checkpoint=cfg.teacher_checkpoint)
        )
    cfg = with_teacher(cfg, teacher)
    given = cfg.teacher_model or cfg.teacher_run or teacher.model.load_checkpoint or teacher.system_prompt
    if cfg.teacher_sft_steps and given is None:
        # The teacher lives in the log dir: apply its exists-policy now, before the teacher is made.
        apply_log_dir_policy(cfg.run.log_dir, cfg.run.if_log_dir_exists)
        path = make_teacher(cfg)
        cfg = with_teacher(
            cfg, dataclasses.replace(teacher, model=dataclasses.replace(teacher.model, load_checkpoint=path))
        )
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, if_log_dir_exists="resume"))
    resolved_config(cfg)  # the registry's lineage: this run's teacher
    return train(cfg)
