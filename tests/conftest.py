"""Session-wide test settings."""

import jax
import pytest

# Tests compare against float32 numpy references. CPU matmuls are exact float32 already; on a GPU
# the default float32 matmul is TF32 (about 1e-3 relative), which would fail those comparisons.
jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True)
def _run_registry(tmp_path_factory, monkeypatch):
    """Every test records its runs in a registry of its own, never in the user's cache folder."""
    monkeypatch.setenv("JAXCOOK_REGISTRY", str(tmp_path_factory.mktemp("registry") / "runs.sqlite"))
