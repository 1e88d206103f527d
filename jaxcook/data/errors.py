"""Errors of the data layer; each message names the file and line, dataset row, or example at fault."""

from __future__ import annotations


class DataError(ValueError):
    """Base class: bad or unusable training data."""


class DataFormatError(DataError):
    """A record that does not parse: bad JSON, a missing key, a message without role or content."""


class UntrainableExampleError(DataError):
    """An example in which no token would be trained (e.g. no assistant turn to learn)."""


class TruncatedAwayError(UntrainableExampleError):
    """An example whose every trained token lies beyond `max_length`: right-truncation left nothing."""


class ExampleTooLongError(DataError):
    """An example longer than `max_length`, when the user asked to drop such examples."""


class DataSourceError(DataError):
    """A source that cannot be opened: a missing file, an unreachable hub, an unknown split."""
