"""Session-wide test settings."""

import gc
from pathlib import Path

import jax
import pytest

# Tests compare against float32 numpy references. CPU matmuls are exact float32 already; on a GPU
# the default float32 matmul is TF32 (about 1e-3 relative), which would fail those comparisons.
jax.config.update("jax_default_matmul_precision", "highest")

_MAPS = Path("/proc/self/maps")
_peak_maps = [0]
_clears = [0]


def _num_maps() -> int:
    return len(_MAPS.read_text().splitlines()) if _MAPS.exists() else 0


@pytest.fixture(autouse=True)
def _run_registry(tmp_path_factory, monkeypatch):
    """Every test records its runs in a registry of its own, never in the user's cache folder."""
    monkeypatch.setenv("JAXCOOK_REGISTRY", str(tmp_path_factory.mktemp("registry") / "runs.sqlite"))


# Drop compiled programs once a module ends above this many mappings: half of Linux's default
# limit. With programs dropped after every module, the most seen at a module end was 11,220.
CLEAR_ABOVE_MAPS = 30_000


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program when a test module ends with many memory mappings.

    XLA:CPU maps each executable's code into memory mappings of its own (about 3 per program)
    and the jit caches keep them alive. Over the whole suite one process otherwise passes Linux's
    `vm.max_map_count` (65530 by default): measured 54,500 mappings at 65% of the suite and
    65,478 at the crash, an mmap failing inside an XLA compile (the segfaults CI saw late in
    the run). Clearing only above `CLEAR_ABOVE_MAPS` keeps the programs that later modules
    share (the tiny model's steps) for most of the run.
    """
    yield
    maps = _num_maps()
    _peak_maps[0] = max(_peak_maps[0], maps)
    if maps > CLEAR_ABOVE_MAPS:
        _clears[0] += 1
        jax.clear_caches()
        gc.collect()


def pytest_terminal_summary(terminalreporter):
    if _peak_maps[0]:
        peak = _peak_maps[0]
        terminalreporter.write_line(
            f"memory mappings at the end of a test module: peak {peak} (limit 65530); "
            f"compiled programs dropped {_clears[0]} times (above {CLEAR_ABOVE_MAPS})"
        )
