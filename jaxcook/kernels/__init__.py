"""Kernels that XLA does not provide on some platform, each with a plain-JAX fallback."""
