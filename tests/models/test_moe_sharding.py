"""A Qwen3-MoE train step (aux loss on) on 8 fake CPU devices (data 2 x fsdp 4) equals one device,
with the expert kernels split along their `embed` axis over `fsdp`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, devices, data, fsdp, mode):
    out = tmp_path / f"{devices}-{mode}.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    cmd = [sys.executable, "-m", "tests.models.moe_sharded_step", str(out), str(data), str(fsdp), mode]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return np.load(out)


@pytest.mark.slow  # 21-34 s on 2 cores: in .ci/run's slow line
@pytest.mark.parametrize("mode", ["full"])  # every weight trains: the experts' grads are compared
def test_eight_devices_match_one(tmp_path, mode):
    one = run(tmp_path, 1, 1, 1, mode)
    eight = run(tmp_path, 8, 2, 4, mode)
    assert int(eight["devices"]) == 8
    specs = json.loads(str(eight["specs"]))
    kernels = {k: v for k, v in specs.items() if "['kernel']" in k}
    assert kernels, specs
    for key, spec in kernels.items():  # [layers, expert, in, out]: the embed axis over fsdp
        # (trailing replicated axes are dropped from a PartitionSpec)
        want = "P(None, None, 'fsdp')" if "down_proj" not in key else "P(None, None, None, 'fsdp')"
        assert spec == want, (key, spec)
    np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-5)
    keys = [k for k in one.files if k not in ("losses", "devices", "specs")]
    assert any("experts" in k for k in keys)
    for key in keys:
        np.testing.assert_allclose(eight[key], one[key], atol=1e-5, err_msg=key)
