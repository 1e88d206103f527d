"""On 4 fake CPU devices (data x fsdp mesh), a sharded step gives the same loss and params as one device."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, devices, data, fsdp, mode):
    out = tmp_path / f"{devices}-{data}-{fsdp}-{mode}.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    subprocess.run(
        [sys.executable, "-m", "tests.engine.sharded_step", str(out), str(data), str(fsdp), mode],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    return np.load(out)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_four_devices_match_one(tmp_path, mode):
    one = run(tmp_path, 1, 1, 1, mode)
    four = run(tmp_path, 4, 2, 2, mode)
    assert int(four["devices"]) == 4
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    keys = [k for k in one.files if k not in ("losses", "devices")]
    assert keys
    for key in keys:
        np.testing.assert_allclose(four[key], one[key], atol=1e-5, err_msg=key)
