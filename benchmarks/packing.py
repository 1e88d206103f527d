"""Padding waste of the `sft` recipe's data per bucket ladder, padded vs packed, and the step time.

    python -m benchmarks.packing [--batches 60] [--time 3]

Builds the `sft` recipe's default data (reasoning-gym math chats rendered for
SmolLM2-135M-Instruct, batch 8, max length 256), batches its first `--batches` batches (the
recipe's 60 steps by default) with each sequence-bucket ladder below, and prints the share of
`[B, T]` slots that hold no token, the `(B, T)` shapes the batches used and the bound on compiled
programs (`BucketConfig.num_programs`). Packed rows may be longer than the longest datum (the
`rows` column: the ladder's top as a multiple of max length). The default (`BucketConfig.for_shapes`,
marked `*`) is the one this table chose. With `--time K` it also times K LoRA r32 optimizer steps
of SmolLM2-135M (f32) with the default buckets, padded and then packed (exact: segment ids keep
the chats apart, a test checks packed == padded), after one compile step per shape they use.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.machine import describe
from jaxcook.engine.batching import make_batch
from jaxcook.engine.buckets import (
    PACK_ROWS,
    SEQ_MULTIPLE,
    SEQ_RATIO,
    BucketConfig,
    device_batch_buckets,
    seq_ladder,
)
from jaxcook.workflows.common import renderer_name_for

# (name, ratio, multiple, packed row length in max lengths); the default is marked in the table
LADDERS = [
    ("powers of two", 2, 1, 1),
    ("powers of two", 2, 1, 2),
    ("powers of two", 2, 1, 4),
    ("multiples of 32", 1, 32, 1),
    ("multiples of 64", 1, 64, 1),
    ("multiples of 64", 1, 64, 2),
    ("multiples of 128", 1, 128, 2),
    ("multiples of 128", 1, 128, 4),
    ("ratio 1.5, x64", 1.5, 64, 1),
    ("ratio 1.5, x64", 1.5, 64, 2),
    ("ratio 1.5, x64", 1.5, 64, 4),
    ("ratio 1.41, x32", 2**0.5, 32, 2),
    ("ratio 1.25, x64", 1.25, 64, 1),
    ("ratio 1.25, x64", 1.25, 64, 2),
    ("ratio 1.25, x64", 1.25, 64, 4),
    ("ratio 1.2, x32", 1.2, 32, 2),
]


def sft_batches(n: int):
    from jaxcook.data.registry import get_sft_builder
    from jaxcook.models import load_tokenizer
    from jaxcook.recipes.sft import Config
    from jaxcook.renderers import get_renderer

    cfg = Config()
    renderer = get_renderer(renderer_name_for(cfg.model), load_tokenizer(cfg.model.name))
    data = get_sft_builder(cfg.dataset, seed=cfg.seed, **cfg.dataset_options).build(
        renderer, batch_size=cfg.batch_size, max_length=cfg.max_length, train_on_what=cfg.train_on_what
    )
    return cfg, [data.train.get_batch(i) for i in range(min(n, len(data.train)))]


def waste(batches, buckets: BucketConfig, pack: bool) -> tuple[float, int, float]:
    """(share of empty slots, number of distinct (B, T) shapes used, mean T per slot)."""
    slots = tokens = row_t = 0
    shapes = set()
    for datums in batches:
        batch, _ = make_batch(
            datums, pack=pack, seq_buckets=buckets.seq_buckets, batch_buckets=buckets.batch_buckets
        )
        slots += batch.tokens_BT.size
        tokens += int(batch.mask_BT.sum())
        shapes.add(batch.tokens_BT.shape)
        row_t += batch.tokens_BT.size * batch.tokens_BT.shape[1]
    return 1 - tokens / slots, len(shapes), row_t / slots


def time_steps(cfg, batches, buckets: BucketConfig, pack: bool, k: int) -> float:
    """Seconds per LoRA step over `batches[:k]`, after one untimed step per shape they use."""
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.models import load
    from jaxcook.types import AdamParams

    model = load(cfg.model.name, lora=cfg.model.lora, tokenizer=False).model
    client = LocalTrainingClient(model, lora=cfg.model.lora, buckets=buckets, pack=pack)
    adam = AdamParams(learning_rate=1e-5)
    timed = batches[:k]
    seen = set()
    for datums in timed:  # compile every program first: (B, T) and the scored positions P
        batch = client._batch(datums, "cross_entropy")[0]
        shape = (batch.tokens_BT.shape, batch.score_idx_BP.shape)
        if shape not in seen:
            seen.add(shape)
            client.forward_backward(datums, "cross_entropy")
            client.optim_step(adam).result()
    t = time.perf_counter()
    for datums in timed:
        client.forward_backward(datums, "cross_entropy")
        client.optim_step(adam).result()
    client.close()
    return (time.perf_counter() - t) / k


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--time", type=int, default=0, help="time this many steps per layout (0: none)")
    args = p.parse_args()
    print(describe(torch_too=False))
    cfg, batches = sft_batches(max(args.batches, args.time))
    call = max(cfg.batch_size, cfg.eval_batch_size)  # the recipe's largest call (its batch buckets)
    lengths = np.array([d.length for b in batches for d in b])
    print(
        f"sft default data: {len(batches)} batches of {cfg.batch_size}, lengths mean {lengths.mean():.0f} "
        f"min {lengths.min()} max {lengths.max()}; batch buckets {device_batch_buckets(call, 1)}"
    )
    # mean T: attention work per slot grows with the row length T (the [T, T] scores)
    print(
        "ladder             rows  padded waste (shapes)  packed waste (shapes, mean T)  programs  seq buckets"
    )
    for name, ratio, multiple, rows in LADDERS:
        low = max(64, multiple)  # a step ladder starts at its step
        seq = seq_ladder(cfg.max_length * rows, min_len=low, ratio=ratio, multiple=multiple)
        buckets = BucketConfig(seq_buckets=seq, batch_buckets=device_batch_buckets(call, 1))
        pad, pad_shapes, _ = waste(batches, buckets, pack=False)
        packed, pack_shapes, mean_t = waste(batches, buckets, pack=True)
        long = len(seq_ladder(4096 * rows, min_len=low, ratio=ratio, multiple=multiple))
        mark = "*" if (ratio, multiple, rows) == (SEQ_RATIO, SEQ_MULTIPLE, PACK_ROWS) else " "
        print(
            f"{mark}{name:16s} {rows:2d}x  {pad:12.1%} ({pad_shapes:2d})      {packed:12.1%} "
            f"({pack_shapes:2d}, {mean_t:4.0f})       {buckets.num_programs:5d}  {long:7d}  {seq}",
            flush=True,
        )
    if args.time:
        times = {}
        for pack in (False, True):
            buckets = BucketConfig.for_shapes(cfg.max_length, call, pack=pack)
            times[pack] = time_steps(cfg, batches, buckets, pack, args.time)
            w, _, _ = waste(batches[: args.time], buckets, pack)
            print(
                f"{'packed' if pack else 'padded'} (default buckets {buckets.seq_buckets}): "
                f"LoRA step {times[pack]:.2f} s over {args.time} steps, waste {w:.1%}",
                flush=True,
            )
        load = "/".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"packed / padded step time: {times[True] / times[False]:.2f}x (load average {load})")


if __name__ == "__main__":
    main()
