"""Evaluations inside a training run: each eval step is one trace span and one HTML log tree.

    evaluators = [*own, *sampling_evaluators(cfg.evals, setup)]   # evaluator(client) -> metrics
    run.log(run_evaluators(evaluators, client, run.log_dir, "dpo", step), step)
    # -> log_dir/reports/eval_000020.html, and a "dpo/eval" span in log_dir/trace.json

Every workflow's config carries `evals` (`evals_field()`): sampling evaluators over JSONL files of
prompts and references (`jaxcook.eval.sampling_eval`), run beside the workflow's own ones (held-out
NLL, DPO metrics, RL env rewards, teacher KL) at each of its evals.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import field
from pathlib import Path

from jaxcook.logging import logtree, trace
from jaxcook.logging.html_report import REPORTS_DIR

EVALS_HELP = (
    'sampling evals at each eval: "qa.jsonl[:scorer+scorer][:key=value]" or a JSON list of them '
    "(scorers: exact_match, contains, regex, math, semantic_similarity; jaxcook.eval.sampling_eval)"
)

Evaluator = Callable[[object], dict[str, float]]  # evaluator(training_client) -> metrics


def evals_field():
    """The `evals: tuple[str, ...] = ()` field of a workflow config, with its `--help` line."""
    return field(default=(), metadata={"help": EVALS_HELP})


def check_evals(specs: Sequence) -> list:
    """Parse the specs now (a bad one fails before the model loads); factories `(setup, data)`."""
    from jaxcook.eval.sampling_eval import evaluator_factories

    return evaluator_factories(specs)


def sampling_evaluators(factories: Sequence, setup, data=None) -> list[Evaluator]:
    return [make(setup, data) for make in factories]


def eval_page(log_dir: str | os.PathLike, step: int) -> Path:
    return Path(log_dir) / REPORTS_DIR / f"eval_{step:06d}.html"


@contextmanager
def eval_report(log_dir: str | os.PathLike, workflow: str, step: int):
    """While open, evaluators log their samples to `eval_page(log_dir, step)`; timed as `<workflow>/eval`."""
    with logtree.report(eval_page(log_dir, step), title=f"{workflow} evals at step {step}"):
        with trace.scope(f"{workflow}/eval", step=step):
            yield


def run_evaluators(
    evaluators: Sequence[Evaluator], client, log_dir: str | os.PathLike, workflow: str, step: int
) -> dict[str, float]:
    with eval_report(log_dir, workflow, step):
        return {k: v for ev in evaluators for k, v in ev(client).items()}
