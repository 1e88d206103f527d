"""Held-out negative log-likelihood and bits per byte of supervised datums, from a training client."""

from __future__ import annotations

from collections.abc import Sequence

from jaxcook.data.metrics import compute_bpb, compute_mean_nll
from jaxcook.logging import logtree
from jaxcook.types import Datum


class NLLEvaluator:
    """`evaluator(client) -> {"<name>/nll", "<name>/bpb"}` under the client's current weights."""

    def __init__(self, data: Sequence[Datum], tokenizer, *, batch_size: int = 8, name: str = "test"):
        if not data:
            raise ValueError("NLLEvaluator needs at least one datum")
        self.data, self.tokenizer, self.batch_size, self.name = list(data), tokenizer, batch_size, name
        self.shown = 4  # datums rendered in an active log tree

    def __call__(self, client) -> dict[str, float]:
        futures = [
            client.forward(self.data[i : i + self.batch_size])
            for i in range(0, len(self.data), self.batch_size)
        ]
        logprobs = [o["logprobs"] for f in futures for o in f.result().loss_fn_outputs]
        weights = [d.loss_fn_inputs["weights"] for d in self.data]
        targets = [d.loss_fn_inputs["target_tokens"] for d in self.data]
        metrics = {
            f"{self.name}/nll": compute_mean_nll(logprobs, weights),
            f"{self.name}/bpb": compute_bpb(logprobs, weights, targets, self.tokenizer),
        }
        with logtree.scope(f"{self.name}: held-out NLL over {len(self.data)} datums"):
            logtree.metrics_table(metrics)
            for i, datum in enumerate(self.data[: self.shown]):
                with logtree.scope(f"datum {i}: target tokens shaded by loss weight", open=i == 0):
                    logtree.datum(datum, self.tokenizer)
        return metrics
