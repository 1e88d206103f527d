"""Two processes x 2 fake CPU devices (gloo collectives over 127.0.0.1) train like one process x 4
devices: same losses and log-probs; a checkpoint saved across both processes restores and the
next step matches the uninterrupted run."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        **extra,
    }


def test_two_processes_match_one(tmp_path):
    cmd = [sys.executable, "-m", "tests.engine.multihost_step"]
    one_out, two_out = tmp_path / "one.npz", tmp_path / "two.npz"
    subprocess.run(
        [*cmd, str(one_out), str(tmp_path / "ck1")], cwd=ROOT, env=env(4), check=True, capture_output=True
    )
    port = free_port()
    procs = [
        subprocess.Popen(
            [*cmd, str(two_out), str(tmp_path / "ck2")],
            cwd=ROOT,
            env=env(
                2,
                JAXCOOK_COORDINATOR=f"127.0.0.1:{port}",
                JAXCOOK_NUM_PROCESSES="2",
                JAXCOOK_PROCESS_ID=str(i),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
    one, two = np.load(one_out), np.load(two_out)
    assert int(one["processes"]) == 1 and int(two["processes"]) == 2
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    np.testing.assert_allclose(two["logprobs"], one["logprobs"], atol=1e-5)
    # resume: the restored client's third step equals the uninterrupted third step
    np.testing.assert_allclose(two["resumed"], two["losses"][2], rtol=1e-6)
    np.testing.assert_allclose(one["resumed"], one["losses"][2], rtol=1e-6)
    assert (tmp_path / "ck2" / "state").is_dir()
