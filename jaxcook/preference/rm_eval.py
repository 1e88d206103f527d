"""Held-out accuracy of a reward (preference) model trained to emit one label token.

Each test datum trains exactly one token, the verdict ("A" or "B"). The model is right on a
datum when its log-probability of the true verdict exceeds that of the other one at the same
position (a datum labelled Tie is compared against both and counted right only if it beats both).
With `groups` (a name per datum), the accuracy of each group is reported too.
"""

from __future__ import annotations

import numpy as np

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
    ):
        if not data:
            raise ValueError("LabelAccuracyEvaluator needs at least one datum")
        if groups is not None and len(groups) != len(data):
            raise ValueError(f"{len(groups)} groups for {len(data)} datums")
        self.groups = groups
        self.batch_size, self.name = batch_size, name
        self.labels = {k: v for k, v in label_token_ids.items() if k in ("A", "B")}
        self.items = []  # (true datum, [alternative datums])
        for d in data:
            trained = np.flatnonzero(d.loss_fn_inputs["weights"] > 0)
            if len(trained) != 1:
                raise ValueError(f"a reward-model datum must train exactly one token, got {len(trained)}")
            pos = int(trained[0])
            true_id = int(d.loss_fn_inputs["target_tokens"][pos])
            alts = []
            for tok in self.labels.values():
                if tok != true_id:
                    targets = d.loss_fn_inputs["target_tokens"].copy()
                    targets[pos] = tok
                    alts.append(Datum(d.model_input, {**d.loss_fn_inputs, "target_tokens": targets}))
            self.items.append((pos, d, alts))

    def _logprobs_at(self, client, data: list[Datum], positions: list[int]) -> np.ndarray:
        futures = [
            client.forward(data[i : i + self.batch_size]) for i in range(0, len(data), self.batch_size)
        ]
        outs = [o["logprobs"] for f in futures for o in f.result().loss_fn_outputs]
        return np.asarray([lp[p] for lp, p in zip(outs, positions, strict=True)])

    def __call__(self, client) -> dict[str, float]:
        flat, positions, owner = [], [], []
        for k, (pos, true, alts) in enumerate(self.items):
            for d in (true, *alts):
                flat.append(d)
                positions.append(pos)
                owner.append(k)
        lp = self._logprobs_at(client, flat, positions)
        right, start = [], 0
        for _, _, alts in self.items:
            true_lp, alt_lp = lp[start], lp[start + 1 : start + 1 + len(alts)]
            right.append(bool(np.all(true_lp > alt_lp)))
            start += 1 + len(alts)
        out = {f"{self.name}/label_accuracy": float(np.mean(right))}
        if self.groups is not None and len(set(self.groups)) > 1:
            for g in sorted(set(self.groups)):
                hits = [r for r, gg in zip(right, self.groups, strict=True) if gg == g]
                out[f"{self.name}/label_accuracy/{g}"] = float(np.mean(hits))
        return out
