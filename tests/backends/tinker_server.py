"""`jaxcook serve` in a subprocess on a free 127.0.0.1 port, for the `backend=tinker` tests.

The tiny registry model (`tiny-random-smollm2`, the recipes' tiny variants' model) with LoRA
alpha 4: the tiny variants train rank 4 with `alpha=None` (scale 1) locally, and Tinker has no
alpha field, so the server's alpha makes the scales equal.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

MODEL = "tiny-random-smollm2"
ENV = {"TINKER_API_KEY": "tml-dummy", "TINKER_TELEMETRY": "0", "HF_HUB_OFFLINE": "1"}


@contextlib.contextmanager
def serve(state_dir: Path, *, model: str = MODEL, lora_alpha: float = 4.0, timeout: float = 300.0):
    """Yield the base URL of a `python -m jaxcook.serve` subprocess (stopped on exit)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = open(state_dir / "server.log", "w")  # noqa: SIM115 - closed below
    argv = [sys.executable, "-m", "jaxcook.serve", "--model", model, "--port", "0"]
    argv += ["--state-dir", str(state_dir), "--lora-alpha", str(lora_alpha), "--poll-timeout", "5"]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **ENV, "PYTHONPATH": root}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=root)
    try:
        deadline = time.monotonic() + timeout
        line = ""
        while " at http://" not in line:  # "jaxcook serve: MODEL at http://127.0.0.1:PORT (state ...)"
            line = proc.stdout.readline()
            if not line and proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"jaxcook serve did not start: {(state_dir / 'server.log').read_text()[-2000:]}"
                )
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def tinker_env():
    """The SDK's environment for a test (a dummy key, no telemetry, no hub), then restored."""
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
