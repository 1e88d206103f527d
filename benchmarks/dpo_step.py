"""DPO step throughput: jaxcook vs TRL's DPOTrainer vs a hand-written PyTorch DPO step.

    python -m benchmarks.dpo_step [--pairs 4] [--seq 256] [--rank 8] [--steps 4] [--share-prefix on,off]

Same model (SmolLM2-135M-Instruct from the embedded GGUF, f32), LoRA r8 on every attention and
MLP projection, the same pairs (a 128-token prompt and two 128-token completions, so 256 tokens
per sequence). One step = reference log-probs (adapters off) + policy forward/backward of the DPO
loss over chosen and rejected + one AdamW update. Prints pairs/s for each and the ratios, and
the load average around each measurement. jaxcook runs once per `--share-prefix` setting, their
steps interleaved: on, a
pair's prompt is held once (prompt + chosen + rejected in one row of ~1.5 x seq tokens, both in
the reference scoring and the policy step) instead of twice. Needs the `dev` extra (trl).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.machine import describe
from benchmarks.peers import torch_smollm2
from jaxcook.models import load, load_tokenizer


def make_pairs(tokenizer, pairs: int, half: int, seed: int = 0):
    """`pairs` (prompt, chosen, rejected) texts that tokenise to exactly `half` tokens each."""
    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta river stone cloud paper seven green light tree".split()

    def text():
        ids = tokenizer(" ".join(rng.choice(words, size=4 * half)))["input_ids"][:half]
        return tokenizer.decode(ids)

    out = []
    for _ in range(pairs):
        p, c, r = text(), text(), text()
        assert all(len(tokenizer(x)["input_ids"]) == half for x in (p, c, r))
        out.append((p, c, r))
    return out


def bench_jaxcook(pairs, tokenizer, rank, steps, settings=(True,)):
    """Seconds per step for each `share_prefix` setting in `settings`: one client each, their
    steps interleaved (on, off, on, off, ...) so a load that changes during the run (a shared
    machine) weighs on every setting alike."""
    from jaxcook.engine.batching import BucketConfig
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.lora import LoraConfig
    from jaxcook.types import AdamParams, datum_from_tokens_weights
    from jaxcook.workflows.preference import with_reference

    lora = LoraConfig(rank=rank, train_unembed=False)
    seq = 2 * len(tokenizer(pairs[0][0])["input_ids"])
    # Unshared: 2 x pairs rows of seq tokens. Shared: one row per pair, the prompt's unscored
    # seq/2 - 1 positions once, then chosen and rejected from the prompt's last token on:
    # 1.5 x seq + 1 tokens, rounded up to 16; the client picks whichever the batch needs.
    shared_seq = -(-(3 * seq // 2 + 1) // 16) * 16
    buckets = BucketConfig(seq_buckets=(seq, shared_seq), batch_buckets=(len(pairs), 2 * len(pairs)))
    data = []
    for p, c, r in pairs:
        for completion in (c, r):
            prompt_ids, comp_ids = tokenizer(p)["input_ids"], tokenizer(completion)["input_ids"]
            tokens = prompt_ids + comp_ids + [tokenizer.eos_token_id]
            weights = [0.0] * len(prompt_ids) + [1.0] * (len(comp_ids) + 1)
            data.append(datum_from_tokens_weights(tokens, weights))
    adam = AdamParams(learning_rate=1e-5, eps=1e-8)
    runs = {}
    for share in settings:
        model = load("smollm2-135m-instruct", lora=lora, tokenizer=False).model
        client = LocalTrainingClient(model, lora=lora, buckets=buckets, share_prefix=share)
        runs[share] = (client, client.save_weights_and_get_sampling_client())  # the initial weights

    def step(share):
        client, reference = runs[share]
        batch = with_reference(reference, data)
        client.forward_backward(batch, "dpo", {"beta": 0.1})
        client.optim_step(adam).result()

    seconds = {share: 0.0 for share in settings}
    for share in settings:
        step(share)
    for _ in range(steps):
        for share in settings:
            t = time.perf_counter()
            step(share)
            seconds[share] += (time.perf_counter() - t) / steps
    for client, reference in runs.values():
        reference.close(), client.close()
    return seconds


def bench_torch_manual(pairs, tokenizer, rank, steps):
    import torch

    model = torch_smollm2(rank).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.95))
    seqs, masks = [], []
    for p, c, r in pairs:
        for completion in (c, r):
            prompt_ids, comp_ids = tokenizer(p)["input_ids"], tokenizer(completion)["input_ids"]
            seqs.append(prompt_ids + comp_ids + [tokenizer.eos_token_id])
            masks.append([0] * len(prompt_ids) + [1] * (len(comp_ids) + 1))
    x = torch.tensor(seqs)
    mask = torch.tensor(masks, dtype=torch.float32)[:, 1:]

    def seq_logps(m):
        logp = torch.log_softmax(m(x[:, :-1]).logits.float(), -1)
        return (logp.gather(-1, x[:, 1:, None])[..., 0] * mask).sum(-1)

    def step():
        with torch.no_grad(), model.disable_adapter():
            ref = seq_logps(model)
        pol = seq_logps(model)
        delta = (pol - ref).view(-1, 2)
        loss = -torch.nn.functional.logsigmoid(0.1 * (delta[:, 0] - delta[:, 1])).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def bench_trl(pairs, tokenizer, rank, steps):
    import datasets
    import transformers
    import trl

    model = torch_smollm2(rank)
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in pairs]
    data = datasets.Dataset.from_list(rows * (steps + 2))
    times: list[float] = []

    class Clock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = trl.DPOConfig(
            output_dir=out,
            per_device_train_batch_size=len(pairs),
            max_steps=steps + 1,
            learning_rate=1e-5,
            beta=0.1,
            max_length=2 * len(tokenizer(pairs[0][0])["input_ids"]) + 1,
            report_to=[],
            save_strategy="no",
            logging_steps=1000,
            use_cpu=True,
            dataloader_num_workers=0,
            adam_beta2=0.95,
        )
        trainer = trl.DPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()]
        )
        trainer.train()
    return (times[-1] - times[0]) / (len(times) - 1)  # excludes the first step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list of peers to skip: trl,torch")
    parser.add_argument("--share-prefix", default="on,off", help="jaxcook settings to run: on,off")
    args = parser.parse_args()
    settings = [s.strip() for s in args.share_prefix.split(",") if s.strip()]
    if not settings or set(settings) - {"on", "off"}:
        parser.error(f"--share-prefix takes a comma list of on/off, got {args.share_prefix!r}")
    print(describe(torch_too="torch" not in args.skip))
    import torch

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    pairs = make_pairs(tokenizer, args.pairs, args.seq // 2)
    results, loads = {}, {}

    def measure(name, fn, *fn_args, **kwargs):
        before = os.getloadavg()[0]
        results[name] = fn(pairs, tokenizer, args.rank, args.steps, *fn_args, **kwargs)
        loads[name] = (before, os.getloadavg()[0])

    before = os.getloadavg()[0]
    shares = [setting == "on" for setting in settings]
    for share, seconds in bench_jaxcook(pairs, tokenizer, args.rank, args.steps, shares).items():
        results[f"jaxcook (shared {'on' if share else 'off'})"] = seconds
        loads[f"jaxcook (shared {'on' if share else 'off'})"] = (before, os.getloadavg()[0])
    if "torch" not in args.skip:
        measure("pytorch (hand-written)", bench_torch_manual)
    if "trl" not in args.skip:
        measure("trl DPOTrainer", bench_trl)
    print(
        f"DPO step, SmolLM2-135M, LoRA r{args.rank}, {args.pairs} pairs x {args.seq} tokens, f32, "
        f"torch threads {torch.get_num_threads()}"
    )
    base = results[f"jaxcook (shared {settings[0]})"]
    for name, seconds in results.items():
        print(
            f"{name:24s} {seconds:7.2f} s/step  {args.pairs / seconds:6.3f} pairs/s  "
            f"jaxcook speed-up {seconds / base:.2f}x  (load average {loads[name][0]:.2f} before, "
            f"{loads[name][1]:.2f} after)"
        )


if __name__ == "__main__":
    main()
