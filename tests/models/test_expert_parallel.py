"""Expert parallelism (`mesh.expert`) on 8 fake CPU devices: the expert weights, their adapters,
grads and Adam moments hold E / expert experts per device; a LoRA train step (loss, grads), the
logits after it and sampling on the same mesh equal one device (`expert_mesh.py` runs every case
of a test in one subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import AbstractMesh

from jaxcook.engine import sharding
from jaxcook.models.config import ModelConfig
from tests.engine.tiny import TINY
from tests.models.expert_mesh import HF

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, *cases):
    out = tmp_path / "expert.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "tests.models.expert_mesh", str(out), *cases]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    got = np.load(out)
    return got, json.loads(str(got["info"]))


def check(got, info, family, sizes, sampled):
    data, fsdp, expert, tensor = sizes
    one, many = f"{family}/1,1,1,1", f"{family}/{','.join(map(str, sizes))}"
    moe = ModelConfig.from_hf(HF[family]).moe
    case = info[many]
    assert case["manual"] == (moe is not None) and not info[one]["manual"]  # experts: a shard_map
    assert case["batch"] == str(sharding.batch_sharding(AbstractMesh(sizes, sharding.MESH_AXES)).spec)
    assert "expert" in case["batch"]
    assert "expert" not in case["q_lora_b"][0]  # attention: data-parallel over `expert`
    for group in ("frozen", "params", "grads", "mu", "nu") if moe is not None else ():
        layout = case["layout"][group]
        assert layout, group
        want_kernels = group in ("frozen",)
        assert any("['kernel']" in k for k in layout) == want_kernels, (group, list(layout))
        for key, (axis, per_shard, shards) in layout.items():
            assert axis == "expert", (group, key, axis)
            assert per_shard == [moe.num_experts // expert], (group, key, per_shard)
            assert shards == 8
    np.testing.assert_allclose(got[f"{many}/loss"], got[f"{one}/loss"], rtol=1e-5)
    np.testing.assert_allclose(got[f"{many}/logits"], got[f"{one}/logits"], atol=1e-5)
    grads = [k for k in got.files if k.startswith(f"{one}/grad")]
    assert any("experts" in k and "lora" in k for k in grads) == (moe is not None), grads
    for key in grads:
        np.testing.assert_allclose(got[many + key[len(one) :]], got[key], atol=1e-5, err_msg=key)
    if not sampled:
        return
    assert case["sampler_mesh"] == {"data": data, "fsdp": fsdp, "expert": expert, "tensor": tensor}
    samples = [k for k in got.files if k.startswith(f"{one}/sample/")]
    assert len([k for k in samples if k.endswith(".tokens")]) == 3 * 2
    assert len([k for k in samples if k.endswith(".prompt")]) == 3
    for key in samples:
        mine = got[many + key[len(one) :]]
        if key.endswith(".tokens"):
            assert len(got[key]) == 8
            np.testing.assert_array_equal(mine, got[key], err_msg=key)
        else:
            np.testing.assert_allclose(mine, got[key], atol=1e-5, err_msg=key)


@pytest.mark.slow  # 21-34 s on 2 cores: in .ci/run's slow line
def test_qwen3_moe_expert_data_tensor_mesh_matches_one_device(tmp_path):
    got, info = run(tmp_path, "qwen3_moe:2,1,2,2:sample")
    check(got, info, "qwen3_moe", (2, 1, 2, 2), sampled=True)


@pytest.mark.slow
def test_more_meshes_and_families_match_one_device(tmp_path):
    cases = {  # (family, mesh): sampled too
        ("qwen3_moe", (1, 2, 4, 1)): False,
        ("deepseek_v3", (1, 2, 2, 2)): True,
        ("gpt_oss", (2, 1, 4, 1)): False,
        ("llama", (1, 2, 4, 1)): False,  # a dense model: `expert` is more data parallelism
    }
    args = [f"{f}:{','.join(map(str, s))}" + (":sample" if smp else "") for (f, s), smp in cases.items()]
    got, info = run(tmp_path, *args)
    for (family, sizes), sampled in cases.items():
        check(got, info, family, sizes, sampled)


def test_mesh_expert_must_divide_the_experts():
    cfg = ModelConfig.from_hf(HF["qwen3_moe"])
    with pytest.raises(sharding.ShardingError, match=r"mesh\.expert=3 does not divide .*num_experts=8"):
        sharding.check_model(cfg, AbstractMesh((1, 1, 3, 1), sharding.MESH_AXES))
    sharding.check_model(TINY, AbstractMesh((1, 1, 3, 1), sharding.MESH_AXES))  # dense: data parallel


def test_mesh_config_has_an_expert_axis():
    assert sharding.MeshConfig(expert=2).sizes(8) == (1, 4, 2, 1)
    assert sharding.MeshConfig(data=2, fsdp=1, expert=-1, tensor=2).sizes(8) == (2, 1, 2, 2)
    with pytest.raises(sharding.ShardingError, match=r"mesh\.expert must be a positive"):
        sharding.MeshConfig(expert=0).sizes(8)
    mesh = AbstractMesh((2, 1, 2, 2), sharding.MESH_AXES)
    assert sharding.batch_axes(mesh) == ("data", "fsdp", "expert")
    assert sharding.batch_axes(AbstractMesh((2, 2, 1, 2), sharding.MESH_AXES)) == ("data", "fsdp")
