"""The completers moved to `jaxcook.completers` (they work on any `SamplingClient`)."""

from jaxcook.completers import LocalMessageCompleter, LocalTokenCompleter

__all__ = ["LocalMessageCompleter", "LocalTokenCompleter"]
