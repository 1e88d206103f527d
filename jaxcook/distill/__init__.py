"""Distillation: a student learns from teachers' log-probabilities.

- `on_policy`: the student samples, teachers score its tokens, per-token reverse KL is the RL
  advantage (one or several teachers, one per prompt source); `train(OnPolicyConfig)`.
- `off_policy`: fixed conversations, the teacher's top-K next-token distribution at each position
  is the soft target of a `[N, K]` cross-entropy; `train(OffPolicyConfig)`.
- `prompt_distill`: the teacher is the student's own model with a long system prompt the student
  never sees; the student is fine-tuned on the prompted teacher's answers; `train(PromptDistillConfig)`.
- `teacher` (load and score, tokenizer check, re-rendering), `prompts` (prompt-only envs),
  `reverse_kl` (advantages), `evaluation` (held-out `test/teacher_kl`).
"""
