"""Session-wide test settings."""

import jax

# Tests compare against float32 numpy references. CPU matmuls are exact float32 already; on a GPU
# the default float32 matmul is TF32 (about 1e-3 relative), which would fail those comparisons.
jax.config.update("jax_default_matmul_precision", "highest")
