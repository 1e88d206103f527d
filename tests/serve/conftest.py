"""One server for the serve tests: the tiny random SmolLM2-shaped model on a free 127.0.0.1
port, driven by the real `tinker` SDK."""

import os

import numpy as np
import pytest

from tests.serve.servers import serving

OFFLINE = {"TINKER_TELEMETRY": "0", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="package", autouse=True)
def _offline_env():
    """No telemetry, no hub, for these tests only: set while tests/serve runs, then restored, so
    the subprocesses of later tests (a hub push to a local stand-in) are not made offline."""
    old = {k: os.environ.get(k) for k in OFFLINE}
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tests.serve.tiny_model import write_tiny_model

    return str(write_tiny_model(tmp_path_factory.mktemp("tiny-model")))


@pytest.fixture(scope="session")
def server(tiny_model_dir, tmp_path_factory):
    with serving(tiny_model_dir, 16, tmp_path_factory.mktemp("serve-state")) as s:
        yield s


@pytest.fixture(scope="session")
def service_client(server):
    import tinker

    with tinker.ServiceClient(base_url=server.url, api_key="tml-dummy") as sc:
        yield sc


def sdk_datums(n: int, seed: int, lengths=(8, 40), vocab: int = 320):
    """Random SDK datums (cross-entropy inputs) and the same data as jaxcook `Datum`s."""
    from tinker import types

    from jaxcook.types import Datum, ModelInput

    rng = np.random.default_rng(seed)
    sdk, local = [], []
    for _ in range(n):
        length = int(rng.integers(*lengths))
        toks = rng.integers(0, vocab, length + 1)
        weights = rng.random(length).astype(np.float32)
        sdk.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(toks[:-1].tolist()),
                loss_fn_inputs={"target_tokens": toks[1:].astype(np.int64), "weights": weights},
            )
        )
        local.append(
            Datum(ModelInput.from_ints(toks[:-1].tolist()), {"target_tokens": toks[1:], "weights": weights})
        )
    return sdk, local
