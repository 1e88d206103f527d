"""Starting `jaxcook serve` inside a test process."""


def serving(model: str, max_batch: int, state_dir):
    """A `jaxcook serve` of `model` in this process on a free 127.0.0.1 port (a context manager
    that yields the running server)."""
    from jaxcook.serve.base import BaseConfig
    from jaxcook.serve.server import ServerConfig, ServerThread

    base = BaseConfig(model=model, max_batch=max_batch)
    return ServerThread(ServerConfig(base=base, state_dir=str(state_dir), port=0, poll_timeout=10.0))
