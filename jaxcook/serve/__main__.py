"""`python -m jaxcook.serve --model NAME [--host 127.0.0.1 --port 8000 --state-dir DIR]`
(also the `jaxcook-serve` command): a Tinker-compatible server over the local engine."""

from __future__ import annotations

import argparse
import os

from jaxcook.serve.base import BaseConfig
from jaxcook.serve.server import ServerConfig, serve


def parse_args(argv=None) -> ServerConfig:
    p = argparse.ArgumentParser(prog="jaxcook-serve", description=__doc__)
    p.add_argument(
        "--model", required=True, help="registry name, local HF folder or .gguf (one base per server)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--state-dir", default=os.path.expanduser("~/.cache/jaxcook/serve"), help="checkpoints and runs"
    )
    p.add_argument("--alias", action="append", default=[], help="another name clients may use for the model")
    p.add_argument("--param-dtype", default="float32", help="base weights dtype (bfloat16 on accelerators)")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha of every adapter (Tinker: 32)")
    p.add_argument("--max-batch", type=int, default=64, help="datums per forward_backward chunk")
    p.add_argument("--max-seq-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--poll-timeout", type=float, default=25.0, help="seconds a retrieve_future poll is held")
    p.add_argument("--log-level", default="warning")
    a = p.parse_args(argv)
    base = BaseConfig(
        model=a.model,
        param_dtype=a.param_dtype,
        lora_alpha=a.lora_alpha,
        max_batch=a.max_batch,
        max_seq_len=a.max_seq_len,
    )
    return ServerConfig(
        base=base,
        state_dir=a.state_dir,
        host=a.host,
        port=a.port,
        poll_timeout=a.poll_timeout,
        aliases=tuple(a.alias),
        log_level=a.log_level,
    )


def main(argv=None) -> None:
    serve(parse_args(argv))


if __name__ == "__main__":
    main()
