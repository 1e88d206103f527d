"""Prompt distillation: SmolLM2-135M-Instruct learns to answer as it does with a long system prompt.

The teacher is the student's own model with a ~400-token system prompt (a pirate tutor who opens
every answer with "Ahoy!" and ends it with a boxed answer, with worked examples) that the student
never sees; the student is fine-tuned on the teacher's answers to offline reasoning-gym sums.
Logged before, halfway and after, on held-out questions without the prompt:
`test/criterion/ahoy` and `test/criterion/boxed` (rates of the student's answers; the teacher's
own rates are `data/teacher_test/criterion/*`), `test/nll` (of the teacher's held-out answers) and
`test/teacher_kl`. See `jaxcook.distill.prompt_distill`.
"""

from __future__ import annotations

from jaxcook.config_aliases import aliases
from jaxcook.distill.prompt_distill import PromptDistillConfig, train
from jaxcook.lora import LoraConfig
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.options import OptimConfig, RunOptions

Config = PromptDistillConfig
ALIASES = aliases()  # model=, dataset=, lora_rank=, epochs=, ... (jaxcook.config_aliases)


def tiny() -> Config:
    """A 2-layer random model, 8 teacher answers, 2 steps: seconds on a CPU."""
    return Config(
        model=ModelOptions(name="tiny-random-smollm2", lora=LoraConfig(rank=4)),
        system_prompt="Answer with one calculation per line, then: The answer is \\boxed{N}.",
        dataset_options={"tasks": ("chain_sum",), "n_per_task": 16, "test_size": 4},
        n_train_prompts=8,
        n_eval_prompts=4,
        max_tokens=8,
        keep_truncated=True,
        max_length=128,
        batch_size=4,
        max_steps=2,
        eval_every=2,
        optim=OptimConfig(learning_rate=1e-3, lr_schedule="constant"),
        run=RunOptions(log_dir="runs/prompt_distill-tiny", save_every=0),
    )


def main(cfg: Config) -> RunResult:
    return train(cfg)
