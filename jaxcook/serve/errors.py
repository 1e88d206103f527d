"""Errors of the server and how they travel: Tinker's `{"error", "category"}` result.

A `UserError` (bad input: unknown model id, unknown loss, wrong shapes, malformed body) is
category "user"; anything else raised while serving a request is category "server". Neither
stops the server: the error becomes the request's result.
"""

from __future__ import annotations

import logging

log = logging.getLogger("jaxcook.serve")


class UserError(ValueError):
    """A request the server refuses; the message names the field at fault."""


class NotFound(UserError):
    """An id (model, sampler, session, checkpoint) the server does not know."""


def error_result(exc: BaseException) -> dict:
    """The retrieve_future body of a failed request."""
    # Engine-side validation (bad shapes, unknown loss, ...) raises ValueError/KeyError/TypeError:
    # it is the caller's input at fault, not the server.
    if isinstance(exc, UserError | ValueError | KeyError | TypeError):
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return {"error": str(message), "category": "user"}
    log.exception("request failed", exc_info=exc)
    return {"error": f"{type(exc).__name__}: {exc}", "category": "server"}
