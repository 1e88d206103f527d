"""Held-out accuracy of a reward (preference) model trained to emit one label token.

Each test datum trains exactly one token, the verdict ("A" or "B"). The model is right on a
datum when its log-probability of the true verdict exceeds that of the other one at the same
position (a datum labelled Tie is compared against both and counted right only if it beats both).
With `groups` (a name per datum), the accuracy of each group is reported too. In an active log
tree (a run's eval report), the first `report_rows` verdicts are listed with both log-probs.
"""

from __future__ import annotations

import numpy as np

from jaxcook.logging import logtree
from jaxcook.types import Datum


class LabelAccuracyEvaluator:
    def __init__(
        self,
        data: list[Datum],
        label_token_ids: dict[str, int],
        *,
        batch_size: int = 16,
        name: str = "test",
        groups: list[str] | None = None,
        report_rows: int = 8,
    ):
        if not data:
            raise ValueError("LabelAccuracyEvaluator needs at least one datum")
        if groups is not None and len(groups) != len(data):
            raise ValueError(f"{len(groups)} groups for {len(data)} datums")
        self.groups = groups
        self.batch_size, self.name, self.report_rows = batch_size, name, report_rows
        self.labels = {k: v for k, v in label_token_ids.items() if k in ("A", "B")}
        # One forward per datum: soft targets [T, K], column 0 the true verdict and the others the
        # alternatives (repeated to a common K), weighted only at the verdict's position.
        k_cols = 1 + len(self.labels)
        self.items = []  # (datum with [T, K] targets, position of the verdict)
        for d in data:
            trained = np.flatnonzero(d.loss_fn_inputs["weights"] > 0)
            if len(trained) != 1:
                raise ValueError(f"a reward-model datum must train exactly one token, got {len(trained)}")
            pos = int(trained[0])
            targets_T = np.asarray(d.loss_fn_inputs["target_tokens"])
            true_id = int(targets_T[pos])
            cols = [true_id, *(tok for tok in self.labels.values() if tok != true_id)]
            cols += [cols[-1]] * (k_cols - len(cols))
            targets_TK = np.repeat(targets_T[:, None], k_cols, axis=1)
            targets_TK[pos] = cols
            weights_TK = np.zeros(targets_TK.shape, np.float32)
            weights_TK[pos] = 1.0
            self.items.append(
                (Datum(d.model_input, {"target_tokens": targets_TK, "weights": weights_TK}), pos)
            )

    def __call__(self, client) -> dict[str, float]:
        data = [d for d, _ in self.items]
        futures = [
            client.forward(data[i : i + self.batch_size]) for i in range(0, len(data), self.batch_size)
        ]
        outs = [o["logprobs"] for f in futures for o in f.result().loss_fn_outputs]
        right = [
            bool(np.all(lp[pos, 0] > lp[pos, 1:])) for lp, (_, pos) in zip(outs, self.items, strict=True)
        ]
        out = {f"{self.name}/label_accuracy": float(np.mean(right))}
        if self.groups is not None and len(set(self.groups)) > 1:
            for g in sorted(set(self.groups)):
                hits = [r for r, gg in zip(right, self.groups, strict=True) if gg == g]
                out[f"{self.name}/label_accuracy/{g}"] = float(np.mean(hits))
        with logtree.scope(f"{self.name}: reward-model verdicts on {len(right)} held-out comparisons"):
            logtree.metrics_table(out)
            logtree.table(
                [
                    {
                        "datum": i,
                        "group": self.groups[i] if self.groups is not None else "",
                        "logp_true_verdict": float(lp[pos, 0]),
                        "logp_other_verdict": float(np.max(lp[pos, 1:])),
                        "right": r,
                    }
                    for i, (lp, (_, pos), r) in enumerate(zip(outs, self.items, right, strict=True))
                ][: self.report_rows]
            )
        return out
