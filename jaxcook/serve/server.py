"""Build the server (base model + service + app) and run it with uvicorn, in this thread or a
background one (tests, notebooks, benchmarks).

    with ServerThread(ServerConfig(base=BaseConfig(model="tiny-random-smollm2"), state_dir=d)) as s:
        client = tinker.ServiceClient(base_url=s.url, api_key="tml-dummy")
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

import uvicorn

from jaxcook.serve.app import create_app
from jaxcook.serve.base import BaseConfig, SharedBase
from jaxcook.serve.service import TinkerService


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    base: BaseConfig
    state_dir: str
    host: str = "127.0.0.1"
    port: int = 8000  # 0: a free port
    poll_timeout: float = 25.0  # seconds a retrieve_future is held before "try_again"
    aliases: tuple[str, ...] = ()  # more names clients may use for the base model
    log_level: str = "warning"


def build(cfg: ServerConfig):
    service = TinkerService(SharedBase(cfg.base), cfg.state_dir, aliases=cfg.aliases)
    return service, create_app(service, poll_timeout=cfg.poll_timeout)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(cfg: ServerConfig) -> None:
    """Run the server in this thread until interrupted."""
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service, app = build(cfg)
    sock = _bind(cfg.host, cfg.port)
    url = f"http://{cfg.host}:{sock.getsockname()[1]}"
    print(f"jaxcook serve: {cfg.base.model} at {url} (state {cfg.state_dir})", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level=cfg.log_level)).run(sockets=[sock])
    finally:
        service.close()


class ServerThread:
    """The server on a background thread; `url` once started. A context manager."""

    def __init__(self, cfg: ServerConfig):
        self.cfg = cfg
        self.service, self.app = build(cfg)
        self._sock = _bind(cfg.host, cfg.port)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{cfg.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level=cfg.log_level))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def start(self) -> ServerThread:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server thread died while starting")
            threading.Event().wait(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.service.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
