"""Errors that cross layers: the HTTP side maps each to one status code."""

from __future__ import annotations


class OmniError(Exception):
    """Base class; `code` is the machine-readable reason sent to clients."""

    code = "internal_error"


class InvalidRequestError(OmniError, ValueError):
    """The request cannot be served by this model (bad size, steps < 1, ...): HTTP 400."""

    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFoundError(OmniError):
    code = "model_not_found"


class EngineOverloadedError(OmniError):
    """The waiting queue is full: HTTP 503 with Retry-After."""

    code = "engine_overloaded"


class EngineNotReadyError(OmniError):
    """The engine is still loading, or it has died: HTTP 503."""

    code = "engine_unavailable"


class ReplicaLostError(EngineNotReadyError):
    """The replica running the request died; the others keep serving: HTTP 503, Retry-After."""

    code = "replica_lost"


class RequestFailedError(OmniError):
    """The engine ran the request and it failed (a fault in its batch, a dead worker)."""

    code = "generation_failed"


class RequestAbortedError(OmniError):
    code = "request_aborted"
