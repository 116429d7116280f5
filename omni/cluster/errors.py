"""Ray's and Serve's exceptions as the errors the HTTP side already answers."""

from __future__ import annotations

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from omni.errors import (
    EngineNotReadyError,
    EngineOverloadedError,
    OmniError,
    ReplicaLostError,
    RequestFailedError,
)


def as_omni_error(exc: Exception) -> Exception:
    """The OmniError a replica raised, or what a lost replica or full queue means to a client;
    anything else (a cancellation) as it is."""
    if isinstance(exc, RayTaskError):  # raised in a replica: its cause is the error itself
        cause = exc.cause
        if isinstance(cause, Exception) and not isinstance(cause, RayTaskError):
            translated = as_omni_error(cause)
            if isinstance(translated, OmniError):
                return translated
        return RequestFailedError(f"a replica failed: {type(cause).__name__}: {cause}")
    if isinstance(exc, OmniError):
        return exc
    if isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError):
        return ReplicaLostError(
            "the replica running this request stopped before it finished (its process died); "
            "the other replicas keep serving and this one is being restarted: send it again"
        )
    if isinstance(exc, BackPressureError):
        return EngineOverloadedError("every replica is full and the queue in front of them too")
    if isinstance(exc, DeploymentUnavailableError):
        return EngineNotReadyError(f"the engine replicas are unavailable: {exc}")
    return exc
