"""Padding waste of the `sft` recipe's data, padded vs packed, and the LoRA step time of each.

    python -m benchmarks.packing [--batches 20] [--time 3]

Builds the `sft` recipe's default data (reasoning-gym math chats rendered for
SmolLM2-135M-Instruct, batch 8, max length 256), batches its first `--batches` batches with the
buckets the recipe uses, and prints the share of [B, T] slots that hold no token in each layout.
With `--time K` it also times K LoRA r32 optimizer steps of SmolLM2-135M (f32) on the same
batches, padded and then packed; packing is exact (segment ids keep the chats apart, a test
checks packed == padded), so the step time is the only difference.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.machine import describe
from jaxcook.backends.local import batch_buckets
from jaxcook.engine.batching import BucketConfig, default_seq_buckets, make_batch
from jaxcook.workflows.common import renderer_name_for


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


def waste(batches, buckets: BucketConfig, pack: bool) -> tuple[float, int]:
    slots = tokens = 0
    for datums in batches:
        batch, _ = make_batch(
            datums, pack=pack, seq_buckets=buckets.seq_buckets, batch_buckets=buckets.batch_buckets
        )
        slots += batch.tokens_BT.size
        tokens += int(batch.mask_BT.sum())
    return 1 - tokens / slots, slots


def time_steps(cfg, batches, buckets: BucketConfig, pack: bool, k: int) -> float:
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.models import load
    from jaxcook.types import AdamParams

    model = load(cfg.model.name, lora=cfg.model.lora, tokenizer=False).model
    client = LocalTrainingClient(model, lora=cfg.model.lora, buckets=buckets, pack=pack)
    adam = AdamParams(learning_rate=1e-5)
    client.forward_backward(batches[0])
    client.optim_step(adam).result()  # compile
    t = time.perf_counter()
    for datums in batches[1 : k + 1]:
        client.forward_backward(datums)
        client.optim_step(adam).result()
    return (time.perf_counter() - t) / k


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--time", type=int, default=0, help="time this many steps per layout (0: none)")
    args = p.parse_args()
    print(describe(torch_too=False))
    cfg, batches = sft_batches(max(args.batches, args.time + 1))
    buckets = BucketConfig(
        seq_buckets=default_seq_buckets(cfg.max_length, min_len=min(64, cfg.max_length)),
        batch_buckets=batch_buckets(cfg.batch_size, 1),
    )
    lengths = np.array([d.length for b in batches for d in b])
    print(
        f"sft default data: {len(batches)} batches of {cfg.batch_size}, lengths mean {lengths.mean():.0f} "
        f"min {lengths.min()} max {lengths.max()}; seq buckets {buckets.seq_buckets}"
    )
    for pack in (False, True):
        w, slots = waste(batches, buckets, pack)
        line = f"{'packed' if pack else 'padded'}: {slots} slots, padding waste {w:.1%}"
        if args.time:
            line += f", LoRA step {time_steps(cfg, batches, buckets, pack, args.time):.2f} s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
