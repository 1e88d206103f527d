"""The sampler runs on the training mesh: on 8 fake CPU devices (2 x 2 x 2) it keeps the trainer's
weight shardings (no gather), splits the KV cache over rows and kv heads, and samples the same
tokens with the same log-probs as one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, devices, data, fsdp, tensor):
    out = tmp_path / f"sample-{devices}.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    subprocess.run(
        [sys.executable, "-m", "tests.engine.sharded_sample", str(out), str(data), str(fsdp), str(tensor)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    got = np.load(out)
    return got, json.loads(str(got["info"]))


@pytest.mark.slow  # 21-34 s on 2 cores: in .ci/run's slow line
def test_sampler_on_the_training_mesh_matches_one_device(tmp_path):
    one, one_info = run(tmp_path, 1, 1, 1, 1)
    eight, info = run(tmp_path, 8, 2, 2, 2)
    assert one_info["graph_mesh"] is None
    assert info["graph_mesh"] == {"data": 2, "fsdp": 2, "expert": 1, "tensor": 2}
    assert info["same_devices"]
    # layer weights: the trainer's layout minus the stacked `layers` axis (shards of [16, 16] of [32, 32])
    layer = info["layer0"]
    assert layer["['self_attn']['q_proj']['kernel'].value"] == [["fsdp", "tensor"], [16, 16], 8]
    assert layer["['self_attn']['o_proj']['kernel'].value"] == [["tensor", "fsdp"], [16, 16], 8]
    assert layer["['mlp']['down_proj']['lora_b'].value"] == [[None, "fsdp"], [4, 16], 8]
    assert layer["['self_attn']['k_proj']['lora_b'].value"] == [[None, ["tensor", "fsdp"]], [4, 4], 8]
    assert info["top"]["['embed_tokens']['embedding'].value"] == [["tensor", "fsdp"], [64, 16], 8]
    assert info["top"]["['lm_head']['kernel'].value"] == [["fsdp", "tensor"], [16, 64], 8]
    # KV cache [rows=4, slots=16, kv heads=2, 8]: rows over data x fsdp, kv heads over tensor
    assert info["cache"] == ["P(('data', 'fsdp'), None, 'tensor')", [1, 16, 1, 8]]
    keys = [k for k in one.files if k != "info"]
    assert len([k for k in keys if k.endswith(".tokens")]) == 3 * 2 + 3 * 3
    for k in keys:
        if k.endswith(".tokens"):
            np.testing.assert_array_equal(eight[k], one[k], err_msg=k)
            assert len(one[k]) == 12
        else:
            np.testing.assert_allclose(eight[k], one[k], atol=1e-5, err_msg=k)
