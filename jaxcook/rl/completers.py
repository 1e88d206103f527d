"""Compatibility re-export: the completer ports live in `jaxcook.ports`."""

from jaxcook.ports import MessageCompleter, StopCondition, TokenCompleter, TokensWithLogprobs

__all__ = ["MessageCompleter", "StopCondition", "TokenCompleter", "TokensWithLogprobs"]
