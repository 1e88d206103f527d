"""A distillation teacher: any model jaxcook loads (a checkpoint of it too), with its own renderer.

    teacher = Teacher.load(TeacherConfig(model=ModelOptions(load_checkpoint="runs/sft/checkpoints/60")),
                           student_tokenizer=tok)
    lp_D = teacher.score(data)                                   # log p_teacher of each datum's targets
    lp_D = teacher.score_completions(prompts_P, completions_P)   # prompts re-rendered the teacher's way
    ids_TK, lp_TK = teacher.topk(data, k=20)[i]                  # top-K next tokens at every position

The teacher scores the student's token ids, so both must share one tokenizer (`check_same_tokenizer`
refuses anything else: there is no cross-tokenizer path). A teacher must never score text in a
format it was not trained on (tinker-cookbook #796/#797: a teacher scoring the student's template
was biased by +0.29 nats/token), so when its renderer differs from the student's, or it has a
`system_prompt` the student does not see (prompt distillation), `score_completions` re-renders the
prompt messages with the teacher's renderer and scores the student's completion tokens after them.

Scoring runs the teacher's training-client `forward` through the port (on the local backend the
same chunked log-softmax as the trainer),
so a teacher with the student's weights and renderer gives the student's trainer log-probs exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jaxcook.renderers import Message
from jaxcook.types import Datum, ModelInput
from jaxcook.workflows.common import ModelOptions, make_setup


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """The teacher's model (`model.load_checkpoint` = its trained weights; `model.lora` must be the
    LoRA config that checkpoint was trained with) and an optional system prompt only it sees."""

    model: ModelOptions = ModelOptions()
    system_prompt: str | None = None


class TokenizerMismatchError(ValueError):
    """The teacher's tokenizer is not the student's (cross-tokenizer distillation is not supported)."""


def check_same_tokenizer(student_tok, teacher_tok, *, student: str, teacher: str) -> None:
    """Raise `TokenizerMismatchError` unless both tokenizers map the same strings to the same ids."""
    if student_tok is teacher_tok:
        return
    s_vocab, t_vocab = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s_vocab == t_vocab:
        return
    only_s = sorted(set(s_vocab) - set(t_vocab))[:3]
    moved = sorted(k for k in set(s_vocab) & set(t_vocab) if s_vocab[k] != t_vocab[k])[:3]
    detail = f"vocab sizes {len(s_vocab)} (student) vs {len(t_vocab)} (teacher)"
    if only_s:
        detail += f"; only the student has {only_s}"
    if moved:
        detail += f"; tokens with other ids: {moved}"
    raise TokenizerMismatchError(
        f"teacher {teacher!r} does not share the student {student!r}'s tokenizer ({detail}). The "
        "teacher scores the student's token ids, so both must use one tokenizer; cross-tokenizer "
        "distillation is not supported: pick a teacher of the student's model family"
    )


class Teacher:
    """A frozen model that scores token sequences; see the module docstring."""

    def __init__(self, setup, config: TeacherConfig):
        self.setup, self.config = setup, config
        self.client = setup.client
        self.tokenizer, self.renderer = setup.tokenizer, setup.renderer
        self.renderer_name = setup.renderer_name
        self.name = config.model.load_checkpoint or config.model.name

    @classmethod
    def load(
        cls,
        config: TeacherConfig,
        *,
        student_tokenizer=None,
        student_name: str = "student",
        max_length: int = 8192,
        batch_size: int = 16,
    ) -> Teacher:
        """Load the teacher; with `student_tokenizer`, refuse one whose tokenizer differs (checked
        before the weights are loaded)."""
        from jaxcook.models import load_tokenizer

        if student_tokenizer is not None:
            check_same_tokenizer(
                student_tokenizer,
                load_tokenizer(config.model.name),
                student=student_name,
                teacher=config.model.load_checkpoint or config.model.name,
            )
        return cls(make_setup(config.model, max_length=max_length, batch_size=batch_size), config)

    def rerenders(self, student_renderer_name: str) -> bool:
        """Whether the student's prompt tokens are not the teacher's (another format or a system prompt)."""
        return self.config.system_prompt is not None or self.renderer_name != student_renderer_name

    def prompt_messages(self, messages: Sequence[Message]) -> list[Message]:
        """The conversation as the teacher sees it: its system prompt first (merged into the
        conversation's own system message, if it has one)."""
        messages = list(messages)
        system = self.config.system_prompt
        if system is None:
            return messages
        if messages and messages[0]["role"] == "system":
            return [{"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}, *messages[1:]]
        return [{"role": "system", "content": system}, *messages]

    def score(self, data: Sequence[Datum]) -> list[np.ndarray]:
        """log p_teacher(target_t | tokens < t) at every target a datum's `mask` marks (every target
        when it has no `mask`; 0 elsewhere: those positions are not unembedded)."""
        probe = []
        for d in data:
            targets = np.asarray(d.loss_fn_inputs["target_tokens"])
            if targets.ndim != 1:
                raise ValueError(f"Teacher.score needs 1-D target_tokens, got shape {targets.shape}")
            wanted = d.loss_fn_inputs.get("mask", np.ones(len(targets)))
            probe.append(Datum(d.model_input, {"target_tokens": targets, "weights": wanted}))
        return [o["logprobs"] for o in self.client.forward(probe).result().loss_fn_outputs]

    def completion_datum(self, messages: Sequence[Message], completion: Sequence[int]) -> tuple[Datum, int]:
        """The teacher's datum of `messages` (its format) + `completion`, and the prompt length."""
        if not completion:
            raise ValueError("score_completions: an empty completion has nothing to score")
        prompt = self.renderer.build_generation_prompt(self.prompt_messages(messages)).to_ints()
        seq = prompt + [int(t) for t in completion]
        mask = (np.arange(len(seq) - 1) >= len(prompt) - 1).astype(np.float32)  # the completion's targets
        datum = Datum(
            ModelInput.from_ints(seq[:-1]), {"target_tokens": np.asarray(seq[1:], np.int32), "mask": mask}
        )
        return datum, len(prompt)

    def score_completions(
        self, prompts: Sequence[Sequence[Message]], completions: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """log p_teacher of each completion token, the prompt rendered with the teacher's renderer."""
        if len(prompts) != len(completions):
            raise ValueError(f"score_completions: {len(prompts)} prompts but {len(completions)} completions")
        made = [self.completion_datum(p, c) for p, c in zip(prompts, completions)]
        scored = self.score([d for d, _ in made])
        # target t of the datum is token t+1 of the sequence: the completion starts at target n_prompt-1
        return [lp[n - 1 :] for lp, (_, n) in zip(scored, made)]

    def topk(self, data: Sequence[Datum], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per datum, `(ids_TK, logp_TK)`: the teacher's `k` most likely next tokens at each input
        position (aligned with `target_tokens`) and their log-probabilities."""
        return self.client.forward_topk(list(data), k).result()

    def close(self) -> None:
        self.client.close()
