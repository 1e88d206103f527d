"""Prompt (context) distillation: the student learns to answer as its own model does with a long
system prompt it never sees.

    result = train(PromptDistillConfig())

1. Teacher = the student's model (same weights) + `system_prompt`. At `temperature` it answers
   `n_train_prompts` training questions and `n_eval_prompts` held-out ones
   (`log_dir/teacher_{train,test}.jsonl`, reused when present); the saved conversations hold the
   question and the answer only, no system prompt.
2. The student is fine-tuned on the training answers with the supervised workflow (cross-entropy).
3. Evaluation every `eval_every` steps from step 0 and after the last step, on the held-out
   questions without the system prompt:
   - `test/nll`: the student's NLL of the teacher's held-out answers (nats per token);
   - `test/teacher_kl`: reverse KL from the student's samples (temperature 1) to the prompted teacher;
   - `test/criterion/<name>`: the fraction of the student's answers (sampled at `temperature`, as
     the teacher's were) meeting each of `criteria`. The teacher's own rate on the same questions
     is logged at step 0 as `data/teacher_test/criterion/<name>`.

The default system prompt (401 SmolLM2 tokens) makes the model a pirate tutor who opens every answer with
"Ahoy!" and ends it with `The answer is \\boxed{N}.`, with four worked examples. Without it
SmolLM2-135M-Instruct never opens with "Ahoy"; with it, it often does: criterion `ahoy` measures
what the student took in from a prompt it never saw, `boxed` the answer format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxcook.distill.evaluation import evaluate_teacher_kl, sample_prompts
from jaxcook.distill.prompts import PromptSource, load_prompts
from jaxcook.distill.teacher import Teacher, TeacherConfig
from jaxcook.logging import logtree
from jaxcook.renderers import Message
from jaxcook.run_result import RunResult
from jaxcook.workflows.common import ModelOptions
from jaxcook.workflows.evals import evals_field
from jaxcook.workflows.options import OptimConfig, RunOptions

DEFAULT_SYSTEM_PROMPT = """You are Captain Ahoy, a cheerful pirate math tutor. Begin every answer \
with the word 'Ahoy!'

Solve each problem step by step: write one short calculation per line, carrying the running \
result from line to line. After the last calculation write an empty line and then exactly one \
final line of the form:
The answer is \\boxed{N}.
where N is the final number. Do not explain, do not restate the question, do not add anything \
after the final line.

Example 1
Problem: State the final answer to the following arithmetic problem: 7 + 9 =
Solution:
Ahoy! 7 + 9 = 16

The answer is \\boxed{16}.

Example 2
Problem: State the final answer to the following arithmetic problem: 84 - 61 - 62 + 71 =
Solution:
Ahoy! 84 - 61 = 23
23 - 62 = -39
-39 + 71 = 32

The answer is \\boxed{32}.

Example 3
Problem: How many legs are there in total if you have 5 dogs, 2 chickens?
Solution:
Ahoy! dog: 5 * 4 = 20
chicken: 2 * 2 = 4
Total: 20 + 4 = 24

The answer is \\boxed{24}.

Example 4
Problem: State the final answer to the following arithmetic problem: 305 + 18 - 40 =
Solution:
Ahoy! 305 + 18 = 323
323 - 40 = 283

The answer is \\boxed{283}."""


def opens_with_ahoy(text: str) -> float:
    return float(text.lstrip().lower().startswith("ahoy"))


def has_boxed_answer(text: str) -> float:
    from jaxcook.rl.envs.grading import extract_boxed

    return float(extract_boxed(text) is not None)


# criterion name -> (answer text -> score in [0, 1]); rates are means over held-out answers
CRITERIA: dict[str, Callable[[str], float]] = {"ahoy": opens_with_ahoy, "boxed": has_boxed_answer}


def criteria_rates(texts: Sequence[str], names: Sequence[str], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{n}": sum(CRITERIA[n](t) for t in texts) / max(len(texts), 1) for n in names}


@dataclass(frozen=True, kw_only=True)
class PromptDistillConfig:
    model: ModelOptions = ModelOptions()  # the student; the teacher is this model + system_prompt
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    dataset: str = "reasoning_gym_math"  # where the questions come from (jaxcook.distill.prompts)
    dataset_options: dict[str, Any] = field(
        default_factory=lambda: {"tasks": ("chain_sum",), "test_size": 64}
    )
    n_train_prompts: int = 128
    n_eval_prompts: int = 32
    max_tokens: int = 96  # per answer, teacher and student
    temperature: float = 0.7  # of the teacher's answers, and of the student's for the criteria
    keep_truncated: bool = False  # keep teacher answers that hit max_tokens
    criteria: tuple[str, ...] = ("ahoy", "boxed")  # see CRITERIA
    max_length: int = 256
    batch_size: int = 8
    num_epochs: int = 2
    max_steps: int | None = None  # None = every batch of every epoch
    optim: OptimConfig = OptimConfig(learning_rate=5e-4, lr_schedule="constant")
    eval_every: int = 16  # steps (and after the last); 0 = only after the last
    evals: tuple[str, ...] = evals_field()  # sampling evals beside the held-out ones
    report_samples: int = 4  # held-out answers of the student shown in each eval report
    seed: int = 0
    run: RunOptions = RunOptions(log_dir="runs/prompt_distill", save_every=0)

    def __post_init__(self):
        unknown = [c for c in self.criteria if c not in CRITERIA]
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; valid: {sorted(CRITERIA)}")


def teacher_answers(
    teacher: Teacher, prompts: Sequence[list[Message]], cfg: PromptDistillConfig, *, seed: int
) -> tuple[list[dict], dict[str, float]]:
    """The prompted teacher's answers as `{"messages": [...question, answer]}` rows (no system
    prompt), dropping truncated ones unless `keep_truncated`; and counts and criteria rates."""
    sampler = teacher.client.save_weights_and_get_sampling_client()
    try:
        seqs = sample_prompts(
            sampler,
            teacher.renderer,
            [teacher.prompt_messages(p) for p in prompts],
            max_tokens=cfg.max_tokens,
            temperature=cfg.temperature,
            seed=seed,
        )
    finally:
        sampler.close()
    rows, texts, truncated = [], [], 0
    for prompt, seq in zip(prompts, seqs):
        text = answer_text(teacher.renderer, seq.tokens)
        texts.append(text)
        if seq.stop_reason == "length":
            truncated += 1
            if not cfg.keep_truncated:
                continue
        rows.append({"messages": [*prompt, {"role": "assistant", "content": text}]})
    stats = {"answers": float(len(rows)), "truncated": float(truncated)}
    return rows, {**stats, **criteria_rates(texts, cfg.criteria, "criterion")}


def answer_text(renderer, tokens: Sequence[int]) -> str:
    """The text of a sampled assistant message (its parts joined when it has several)."""
    from jaxcook.renderers import get_text_content

    message, _ = renderer.parse_response(list(tokens))
    return get_text_content(message)


def _read_or_make(files, name: str, make) -> Path:
    """The local path of log-dir file `name` (`PreRunFiles`): the one there, or `make()`'s rows."""
    path = files.fetch(name)
    if path.exists():
        return path
    return files.write(name, "".join(json.dumps(r) + "\n" for r in make()).encode())


class PromptDistillEvaluator:
    """`evaluator(client) -> metrics`: teacher KL (samples at temperature 1) and criteria rates
    (samples at the teacher's temperature) of the student's answers to the held-out questions."""

    def __init__(self, teacher: Teacher, setup, prompts: list[list[Message]], cfg: PromptDistillConfig):
        self.teacher, self.setup, self.prompts, self.cfg = teacher, setup, prompts, cfg

    def __call__(self, client) -> dict[str, float]:
        cfg, renderer = self.cfg, self.setup.renderer
        sampler = client.save_weights_and_get_sampling_client()
        try:
            metrics, samples = evaluate_teacher_kl(
                sampler, renderer, [(self.teacher, self.prompts)], max_tokens=cfg.max_tokens, seed=cfg.seed
            )
            tokens = [s.tokens for s in samples]
            if cfg.temperature != 1.0:
                seqs = sample_prompts(
                    sampler,
                    renderer,
                    self.prompts,
                    max_tokens=cfg.max_tokens,
                    temperature=cfg.temperature,
                    seed=cfg.seed + 1,  # the teacher's held-out answers were sampled with seed + 1
                )
                tokens = [s.tokens for s in seqs]
        finally:
            sampler.close()
        texts = [answer_text(renderer, t) for t in tokens]
        metrics = {**metrics, **criteria_rates(texts, cfg.criteria, "test/criterion")}
        with logtree.scope(f"the student's answers to {len(texts)} held-out questions", open=True):
            logtree.metrics_table(metrics)
            logtree.table(
                [
                    {"question": p[-1]["content"], "answer": t, **{c: CRITERIA[c](t) for c in cfg.criteria}}
                    for p, t in list(zip(self.prompts, texts))[: cfg.report_samples]
                ]
            )
        return metrics


def train(cfg: PromptDistillConfig) -> RunResult:
    """Generate the prompted teacher's answers, fine-tune the student on them, evaluate."""
    import dataclasses

    from jaxcook.config import config_to_dict
    from jaxcook.data.builders import ConversationFileBuilder, SupervisedData
    from jaxcook.data.datum import DatumConverter, DatumPolicy
    from jaxcook.data.sources import read_conversations_jsonl
    from jaxcook.workflows.run_storage import PreRunFiles, apply_log_dir_policy
    from jaxcook.workflows.supervised import SupervisedConfig
    from jaxcook.workflows.supervised import train as sft_train

    # The teacher's answers live in the log dir (a folder or a URL): apply its exists-policy first.
    apply_log_dir_policy(cfg.run.log_dir, cfg.run.if_log_dir_exists)
    files = PreRunFiles(cfg.run.log_dir)
    files.write("prompt_distill_config.json", json.dumps(config_to_dict(cfg), indent=2).encode())
    teacher = Teacher.load(
        TeacherConfig(model=cfg.model, system_prompt=cfg.system_prompt),
        max_length=cfg.max_length * 4,
        batch_size=cfg.batch_size,
    )
    try:
        source = PromptSource(dataset=cfg.dataset, dataset_options=dict(cfg.dataset_options))
        train_prompts, test_prompts = load_prompts(source, seed=cfg.seed)
        if len(train_prompts) < cfg.n_train_prompts or len(test_prompts) < cfg.n_eval_prompts:
            raise ValueError(
                f"{cfg.dataset!r} has {len(train_prompts)} train / {len(test_prompts)} held-out prompts; "
                f"asked for {cfg.n_train_prompts} / {cfg.n_eval_prompts} (raise n_per_task or test_size "
                "in dataset_options)"
            )
        train_prompts, test_prompts = train_prompts[: cfg.n_train_prompts], test_prompts[: cfg.n_eval_prompts]
        stats: dict[str, float] = {}

        def make(prompts, seed, split):
            def run():
                rows, counts = teacher_answers(teacher, prompts, cfg, seed=seed)
                stats.update({f"data/teacher_{split}/{k}": v for k, v in counts.items()})
                return rows

            return run

        train_file = _read_or_make(files, "teacher_train.jsonl", make(train_prompts, cfg.seed, "train"))
        test_file = _read_or_make(files, "teacher_test.jsonl", make(test_prompts, cfg.seed + 1, "test"))

        def build_data(sft_cfg, setup) -> SupervisedData:
            data = ConversationFileBuilder(path=str(train_file), seed=cfg.seed).build(
                setup.renderer, batch_size=cfg.batch_size, max_length=cfg.max_length
            )
            policy = DatumPolicy(max_length=cfg.max_length)
            test = DatumConverter(setup.renderer, policy).convert_all(
                read_conversations_jsonl(test_file).records
            )
            return SupervisedData(data.train, test or None, {**data.stats, **stats})

        sft = SupervisedConfig(
            model=cfg.model,
            dataset=str(train_file),
            max_length=cfg.max_length,
            batch_size=cfg.batch_size,
            num_epochs=cfg.num_epochs,
            max_steps=cfg.max_steps,
            optim=cfg.optim,
            eval_every=cfg.eval_every,
            evals=cfg.evals,
            seed=cfg.seed,
            run=dataclasses.replace(cfg.run, if_log_dir_exists="resume"),
        )
        evaluator = lambda setup, data: PromptDistillEvaluator(teacher, setup, test_prompts, cfg)  # noqa: E731
        return sft_train(sft, build_data=build_data, extra_evaluators=(evaluator,))
    finally:
        teacher.close()
        files.close()
