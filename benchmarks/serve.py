"""Server overhead: the same SFT step and sampling call through the tinker SDK + `jaxcook serve`
and through the local clients, in one run.

    python -m benchmarks.serve [--model smollm2-135m-instruct] [--batch 8] [--seq 256] [--steps 3]

The server runs in its own process (`python -m jaxcook.serve`, as a user would start it) and is
idle while the local client is timed. Both sides use the same LoRA (r8, alpha 32), the same
buckets and the same data; both unembed every position (Tinker returns every log-prob).
Prints the median seconds of an SFT step (forward_backward + optim_step) and of a sampling call
on each side and their ratio (server / local), then requests/s of small calls: an HTTP health
check, a 16-token forward through the SDK one at a time and pipelined, and the local forward.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from benchmarks.machine import describe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_time(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def start_server(model: str, port: int, state_dir: str, max_batch: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jaxcook.serve", "--model", model, "--port", str(port)]
    cmd += ["--state-dir", state_dir, "--max-batch", str(max_batch)]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": os.getcwd()})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 900
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/api/v1/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("the server did not start in 15 minutes")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps per side (after 1 warm-up)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--small-calls", type=int, default=20)
    a = p.parse_args(argv)
    print(describe(torch_too=False))
    os.environ.setdefault("TINKER_TELEMETRY", "0")

    import tinker
    from tinker import types

    from jaxcook.engine.batching import BucketConfig, default_batch_buckets, default_seq_buckets
    from jaxcook.engine.training_client import LocalTrainingClient
    from jaxcook.lora import LoraConfig
    from jaxcook.models import load_config
    from jaxcook.sampling import LocalSamplingClient
    from jaxcook.types import AdamParams, Datum, ModelInput, SamplingParams

    port, state = free_port(), tempfile.mkdtemp(prefix="jaxcook-serve-bench-")
    proc = start_server(a.model, port, state, max_batch=max(a.batch, 8))
    url = f"http://127.0.0.1:{port}"
    try:
        cfg = load_config(a.model)
        rng = np.random.default_rng(0)
        seqs = rng.integers(0, cfg.vocab_size, (a.batch, a.seq + 1))
        ones = np.ones(a.seq, np.float32)
        local_data = [
            Datum(ModelInput.from_ints(s[:-1].tolist()), {"target_tokens": s[1:], "weights": ones})
            for s in seqs
        ]
        sdk_data = [
            types.Datum(
                model_input=types.ModelInput.from_ints(s[:-1].tolist()),
                loss_fn_inputs={"target_tokens": s[1:].astype(np.int64), "weights": ones},
            )
            for s in seqs
        ]
        small = rng.integers(0, cfg.vocab_size, 17)
        small_local = Datum(
            ModelInput.from_ints(small[:-1].tolist()),
            {"target_tokens": small[1:], "weights": np.ones(16, np.float32)},
        )
        small_sdk = types.Datum(
            model_input=types.ModelInput.from_ints(small[:-1].tolist()),
            loss_fn_inputs={"target_tokens": small[1:].astype(np.int64), "weights": np.ones(16, np.float32)},
        )
        prompt = rng.integers(0, cfg.vocab_size, 64).tolist()
        sparams = dict(max_tokens=32, seed=0, stop=[])
        adam = dict(learning_rate=1e-4)

        # -- local -----------------------------------------------------------------------------
        buckets = BucketConfig(
            seq_buckets=default_seq_buckets(cfg.max_position_embeddings),
            batch_buckets=default_batch_buckets(max(a.batch, 8)),
            score_fractions=(),
        )
        local = LocalTrainingClient.create(a.model, lora=LoraConfig(rank=a.rank, alpha=32.0), buckets=buckets)

        def local_step():
            fb = local.forward_backward(local_data)
            local.optim_step(AdamParams(**adam)).result()
            fb.result()

        local_step()
        t_local = median_time(local_step, a.steps)
        ls = LocalSamplingClient.from_training_client(local)
        local_sample = lambda: ls.sample(ModelInput.from_ints(prompt), 4, SamplingParams(**sparams)).result()
        local_sample()
        s_local = median_time(local_sample, a.steps)
        local.forward([small_local]).result()
        f_local = median_time(lambda: local.forward([small_local]).result(), a.small_calls)
        local.close()
        ls.close()

        # -- server ----------------------------------------------------------------------------
        with tinker.ServiceClient(base_url=url, api_key="tml-dummy") as sc:
            tc = sc.create_lora_training_client(base_model=a.model, rank=a.rank).result()

            def server_step():
                fb = tc.forward_backward(sdk_data, "cross_entropy")
                tc.optim_step(types.AdamParams(**adam)).result()
                fb.result()

            server_step()
            t_server = median_time(server_step, a.steps)
            sampler = tc.save_weights_and_get_sampling_client().result()
            server_sample = lambda: sampler.sample(
                types.ModelInput.from_ints(prompt), 4, types.SamplingParams(**sparams)
            ).result()
            server_sample()
            s_server = median_time(server_sample, a.steps)

            tc.forward([small_sdk], "cross_entropy").result()
            f_server = median_time(lambda: tc.forward([small_sdk], "cross_entropy").result(), a.small_calls)
            t = time.perf_counter()
            futures = [tc.forward([small_sdk], "cross_entropy") for _ in range(a.small_calls)]
            for f in futures:
                f.result()
            pipelined = a.small_calls / (time.perf_counter() - t)
        with httpx.Client() as http:
            health = median_time(lambda: http.get(url + "/api/v1/healthz"), 200)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    tokens = a.batch * a.seq
    print(f"model {a.model}, LoRA r{a.rank}, {a.batch} x {a.seq} tokens, median of {a.steps}")
    print(
        f"SFT step     local {t_local:.3f} s   server {t_server:.3f} s   ratio {t_server / t_local:.3f}x "
        f"({tokens / t_local:.0f} / {tokens / t_server:.0f} tokens/s)"
    )
    print(f"sample 4x32  local {s_local:.3f} s   server {s_server:.3f} s   ratio {s_server / s_local:.3f}x")
    print(
        f"small calls  healthz {1 / health:.0f} req/s; 16-token forward: local {1 / f_local:.1f}/s, "
        f"SDK sequential {1 / f_server:.1f}/s, SDK pipelined {pipelined:.1f}/s"
    )


if __name__ == "__main__":
    main()
