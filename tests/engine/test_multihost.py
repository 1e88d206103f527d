"""Two processes x 2 fake CPU devices (gloo collectives over 127.0.0.1) train like one process x 4
devices: same losses and log-probs while each process builds only its half of every batch's rows;
a checkpoint saved across both processes restores and the next step matches the uninterrupted
run; the trained weights sample on the mesh the same tokens and log-probs on both processes as on
one; only process 0 writes metrics and reports."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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


@pytest.mark.slow  # 21-34 s on 2 cores: in .ci/run's slow line
def test_two_processes_match_one(tmp_path):
    cmd = [sys.executable, "-m", "tests.engine.multihost_step"]
    one_out, two_out, logs = tmp_path / "one", tmp_path / "two", tmp_path / "logs"
    subprocess.run(
        [*cmd, str(one_out), str(tmp_path / "ck1"), str(logs) + "1"],
        cwd=ROOT,
        env=env(4),
        check=True,
        capture_output=True,
    )
    port = free_port()
    procs = [
        subprocess.Popen(
            [*cmd, str(two_out), str(tmp_path / "ck2"), str(logs) + "2"],
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
    one = np.load(f"{one_out}-0.npz")
    twos = [np.load(f"{two_out}-{i}.npz") for i in range(2)]
    assert int(one["processes"]) == 1 and all(int(two["processes"]) == 2 for two in twos)
    # each process built the host arrays of its own rows only: global B / 2 (one process: all B)
    for two in twos:
        rows, global_rows = two["host_rows"].T
        assert len(rows) >= 4 and (global_rows == 8).all() and (rows == global_rows // 2).all()
    assert (one["host_rows"][:, 0] == one["host_rows"][:, 1]).all()
    for two in twos:  # both processes see the global outputs
        np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
        np.testing.assert_allclose(two["logprobs"], one["logprobs"], atol=1e-5)
        # resume: the restored client's third step equals the uninterrupted third step
        np.testing.assert_allclose(two["resumed"], two["losses"][2], rtol=1e-6)
    np.testing.assert_allclose(one["resumed"], one["losses"][2], rtol=1e-6)
    assert (tmp_path / "ck2" / "state").is_dir()
    # sampling on the 2-process mesh: the same tokens and log-probs as one process, on both
    sampled = sorted(k for k in one.files if k.startswith("sample"))
    assert len(sampled) == 3 * 2 * 2 + 3  # 3 prompts x 2 samples x (tokens, logprobs) + prompts
    assert len(one["sample0.0.tokens"]) == 8 and (one["sample1.0.tokens"] != one["sample1.1.tokens"]).any()
    for two in twos:
        assert sorted(k for k in two.files if k.startswith("sample")) == sampled
        for k in sampled:
            if k.endswith(".tokens"):
                np.testing.assert_array_equal(two[k], one[k], err_msg=k)
            else:
                np.testing.assert_allclose(two[k], one[k], atol=1e-5, err_msg=k)
    # metrics and reports: process 0 only
    assert (Path(f"{logs}2-0") / "metrics.jsonl").read_text().count("train/loss") == 2
    assert list((Path(f"{logs}2-0") / "reports").glob("*.html"))
    assert not Path(f"{logs}2-1").exists()
