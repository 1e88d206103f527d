"""Weights load straight into their shardings on 4 fake CPU devices: each device holds about
1/4 of the model, the host's peak stays within about one tensor (a bound in the largest tensor,
not the model), and the values equal an unsharded load."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcook.models import load
from jaxcook.models.config import ModelConfig
from jaxcook.models.decoder import Decoder
from jaxcook.models.export import save_hf
from jaxcook.models.params import default_param_dtype, load_state_from_source

ROOT = Path(__file__).resolve().parents[2]

# Small but not trivial: 4 layers, ~8 MB in f32; the largest tensor is ~1/7 of the model.
CONFIG = ModelConfig(
    model_type="llama",
    vocab_size=1024,
    hidden_size=192,
    intermediate_size=384,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=48,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    save_hf(Decoder(CONFIG, rngs=nnx.Rngs(params=3)), out)
    return out


def run(folder, tmp_path, fsdp, tensor, kind):
    out = tmp_path / f"{kind}-{fsdp}-{tensor}.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    args = [str(folder), str(out), str(fsdp), str(tensor), kind]
    subprocess.run(
        [sys.executable, "-m", "tests.models.sharded_load", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return np.load(out)


@pytest.mark.parametrize("kind", ["slices", "whole"])
def test_sharded_load(folder, tmp_path, kind):
    got = run(folder, tmp_path, 2, 2, kind)
    total, largest, peak = int(got["total"]), int(got["largest"]), int(got["peak"])
    assert largest < total / 5  # the model is several tensors, so the bounds below mean something
    # Each device holds a quarter (norm scales are split over fsdp only: a few hundred bytes more).
    per_device = got["per_device"]
    assert len(per_device) == 4
    np.testing.assert_allclose(per_device, total / 4, rtol=0.02)
    # Host memory (tracemalloc: numpy and Python allocations, not XLA's device buffers): the
    # loader waits until each slice's host buffer is released before reading the next
    # (`params._sharded_array`), so the peak is one slice being assembled (slices) or one whole
    # tensor plus its slice (whole), plus the loader's own Python objects (~120-190 KB traced
    # before the first tensor). Measured 6 runs each, load average 4.6-6.4 on 2 cores: slices
    # 598,693-601,906 B (0.51 x largest), whole 1,184,081-1,185,491 B (1.005 x largest);
    # largest 1,179,648 B, model 6,888,192 B. Before the loader waited, 1.6-5.7 MB.
    allowance = 256 * 1024
    bound = {"slices": largest, "whole": 1.5 * largest}[kind] + allowance
    assert peak < bound, (peak, largest, total)
    specs = json.loads(str(got["specs"]))
    assert specs["['layers']['self_attn']['q_proj']['kernel'].value"] == "P(None, 'fsdp', 'tensor')"
    assert specs["['embed_tokens']['embedding'].value"] == "P('tensor', 'fsdp')"
    # Same values as a plain (unsharded) load of the same folder.
    want = nnx.state(load(str(folder), tokenizer=False).model)
    for path, v in jax.tree_util.tree_leaves_with_path(want):
        name = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(got[name], np.asarray(v), err_msg=name)


def test_base_weights_default_to_f32_on_cpu():
    assert jax.default_backend() == "cpu"
    assert default_param_dtype() == jnp.float32
    cfg = dataclasses.replace(CONFIG, num_layers=1)
    model = load_state_from_source(cfg, _FakeSource(cfg))
    assert model.embed_tokens.embedding[...].dtype == jnp.float32
    model = load_state_from_source(cfg, _FakeSource(cfg), param_dtype=jnp.bfloat16)
    assert model.layers.mlp.up_proj.kernel[...].dtype == jnp.bfloat16


class _FakeSource:
    """Every tensor the model needs, filled with ones (names and shapes from the model)."""

    def __init__(self, cfg):
        from jaxcook.models.params import export_tensors

        self.tensors = export_tensors(Decoder(cfg, rngs=nnx.Rngs(params=0)))

    def names(self):
        return list(self.tensors)

    def shape(self, name):
        return self.tensors[name].shape

    def get(self, name):
        return np.ones(self.tensors[name].shape, np.float32)


@pytest.mark.slow
def test_sharded_load_of_the_embedded_gguf(tmp_path):
    """The real SmolLM2-135M GGUF (dequantised one whole tensor at a time) onto 4 fsdp devices (its
    9 heads split over no `tensor` axis but 1, 3 or 9)."""
    from jaxcook.models import resolve

    path = resolve("smollm2-135m-instruct").path
    got = run(path, tmp_path, 4, 1, "gguf")
    total, largest, peak = int(got["total"]), int(got["largest"]), int(got["peak"])
    np.testing.assert_allclose(got["per_device"], total / 4, rtol=0.02)
    assert peak < 3 * largest and peak < total / 2, (peak, largest, total)
    want = nnx.state(load("smollm2-135m-instruct", tokenizer=False).model)
    for path_, v in jax.tree_util.tree_leaves_with_path(want):
        name = jax.tree_util.keystr(path_)
        np.testing.assert_array_equal(got[name], np.asarray(v), err_msg=name)
