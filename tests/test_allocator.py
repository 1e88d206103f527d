"""`jaxcook.allocator`: `scripts/train.py`'s opt-in re-exec with glibc malloc settings, and its effect.

The effect is counted, not timed: the minor page faults of the median call of a jitted function
whose temporaries (a 64 MiB product) glibc would otherwise map afresh on every call (measured:
16,385-16,646 a call by default, 0 tuned but for an occasional call that maps its block anew).
"""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcook import allocator

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc settings")

PROBE = """
import os, sys
print("start", os.getpid(), os.environ.get("MALLOC_MMAP_MAX_"), os.environ.get("MALLOC_TOP_PAD_"), flush=True)
from jaxcook import allocator
allocator.relaunch_tuned()
print("main", os.getpid(), sys.argv[1:], flush=True)
"""

FAULTS = """
import resource, sys
from jaxcook import allocator
allocator.relaunch_tuned()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (lambda y: y.sum() + y.max())(x @ x))
x = jnp.ones((4096, 4096), jnp.float32)
f(x).block_until_ready()
per_call = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sorted(per_call)[4])  # the median call
"""


def run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "JAXCOOK_MALLOC"))}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_runs_again_once_in_the_same_process_with_the_settings():
    out = run(PROBE, "a", "b=1", JAXCOOK_MALLOC="tuned")
    assert out.returncode == 0, out.stderr
    start_1, start_2, main = out.stdout.splitlines()
    pid = start_1.split()[1]
    assert start_1 == f"start {pid} None None"
    assert start_2 == f"start {pid} 0 {allocator.TUNED['MALLOC_TOP_PAD_']}"
    assert main == f"main {pid} ['a', 'b=1']"


def test_a_setting_the_user_made_is_kept():
    out = run(PROBE, MALLOC_TOP_PAD_="4096", JAXCOOK_MALLOC="tuned")
    assert out.stdout.splitlines()[1].endswith(" 0 4096")


def test_default_leaves_the_process_alone_and_a_bad_value_is_named():
    for env in ({}, {"JAXCOOK_MALLOC": "default"}):
        out = run(PROBE, **env)
        assert [line.split()[0] for line in out.stdout.splitlines()] == ["start", "main"]
    bad = run(PROBE, JAXCOOK_MALLOC="fast")
    assert bad.returncode != 0
    assert "JAXCOOK_MALLOC='fast': expected one of ('tuned', 'default')" in bad.stderr


def test_tuned_settings_spare_the_step_buffers_their_page_faults():
    faults = {}
    for mode in ("default", "tuned"):
        out = run(FAULTS, JAXCOOK_MALLOC=mode)
        assert out.returncode == 0, out.stderr
        faults[mode] = int(out.stdout.split()[-1])
    # 64 MiB of temporaries: ~16k faults a call when mapped afresh
    assert faults["default"] > 8000, faults
    assert faults["tuned"] < faults["default"] / 8, faults


def test_train_py_names_a_bad_setting_in_one_line():
    out = run(
        f"import runpy, sys; sys.argv = ['train.py', '--help']; "
        f"runpy.run_path({str(ROOT / 'scripts' / 'train.py')!r}, run_name='__main__')",
        JAXCOOK_MALLOC="fast",
    )
    assert out.returncode == 2
    assert (
        out.stderr.strip() == "train.py: error: JAXCOOK_MALLOC='fast': expected one of ('tuned', 'default')"
    )
