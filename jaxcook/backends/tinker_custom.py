"""Custom losses over a Tinker service, without torch: the gradient of a JAX loss with respect to
the per-token log-probs, sent back as `cross_entropy` weights.

A custom loss is any JAX function of the targets' log-probs, `fn(logp_BT, batch) -> (loss,
metrics)` (the local backend's `forward_backward_custom` signature; `batch` is the
`jaxcook.engine.batching.Batch` of the datums: `inputs`, `mask_BT`, `datum_ids_BT`, ...). By the
chain rule, dL/dtheta = sum_t (dL/dlogp_t) dlogp_t/dtheta. The service's `cross_entropy` with
weights w is L_ce = -sum_t w_t logp_t, whose gradient is -sum_t w_t dlogp_t/dtheta; with
w = -dL/dlogp the two gradients are equal. One custom step is therefore:

1. `forward` (cross_entropy, zero weights): logp of every target under the current weights;
2. here, `jax.value_and_grad(fn)` at those log-probs (jitted once per loss and bucket shape);
3. `forward_backward` with `cross_entropy` and weights = -dL/dlogp: the service accumulates
   exactly dL/dtheta, and its metrics report the custom loss (`loss:sum`) and the surrogate's.

Cost: two passes over the data (a forward, then a forward + backward) and one round trip in
between, against one pass for a loss the service implements. It is the method of the SDK's own
`forward_backward_custom`, which needs torch. jaxcook losses the service lacks (`dpo`) take the
same path, so DPO runs on any Tinker-API service.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from jaxcook.core import losses as losses_lib
from jaxcook.engine.batching import default_batch_buckets, default_seq_buckets, make_batch, unbatch
from jaxcook.types import Datum

LossFn = Callable  # (logp_BT, batch) -> (loss, metrics)


def builtin_loss(name: str, config: dict | None) -> LossFn:
    """A jaxcook loss (`core.losses.LOSSES`) as a custom loss of log-probs (one object per
    (name, config), so its jitted gradient is compiled once)."""
    key = (name, tuple(sorted(losses_lib.check_loss_config(name, config).items())))
    if key not in _BUILTIN:
        fn, kwargs = losses_lib.get_loss(name), dict(key[1])

        def loss(logp_BT, batch):
            extra = {}
            if name in losses_lib.PER_DATUM_LOSSES:
                extra = {"datum_ids_BT": batch.datum_ids_BT, "datum_valid_D": batch.datum_valid_D}
            return fn(logp_BT, batch.inputs, batch.mask_BT, **kwargs, **extra)

        _BUILTIN[key] = loss
    return _BUILTIN[key]


_BUILTIN: dict[tuple, LossFn] = {}


class LogprobGradient:
    """Step 2 above: loss, metrics and dL/dlogp of a custom loss at given per-datum log-probs.

    `max_length` / `batch_size`: the usual largest datum and call (the bucket sizes, so a run
    compiles a bounded number of programs); longer ones get a bucket of their own.
    """

    def __init__(self, *, max_length: int, batch_size: int):
        self.max_length, self.batch_size = max_length, batch_size
        self._jitted: dict[LossFn, Callable] = {}

    def _batch(self, data: list[Datum]):
        longest = max(d.length for d in data)
        top = max(self.max_length, longest)
        return make_batch(
            data,
            pack=False,
            seq_buckets=default_seq_buckets(top, min_len=min(64, top)),
            batch_buckets=default_batch_buckets(max(self.batch_size, len(data))),
        )

    def __call__(self, fn: LossFn, data: list[Datum], logprobs: list[np.ndarray]):
        """(loss, metrics, [dL/dlogp of datum i, shape `[length_i]`]) of `fn` at `logprobs`."""
        batch, layout = self._batch(data)
        logp_BT = np.zeros(batch.tokens_BT.shape, np.float32)
        for r, s, lp in zip(layout.rows_N.tolist(), layout.starts_N.tolist(), logprobs, strict=True):
            logp_BT[r, s : s + len(lp)] = lp
        if fn not in self._jitted:
            self._jitted[fn] = jax.jit(jax.value_and_grad(fn, has_aux=True))
        (loss, metrics), grad_BT = jax.device_get(self._jitted[fn](logp_BT, batch))
        grads = [np.asarray(g, np.float32) for g in unbatch(layout, grad_BT)]
        return float(loss), {k: float(v) for k, v in metrics.items()}, grads
