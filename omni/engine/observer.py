"""What the engine actor reports as it runs, for whoever keeps metrics.

The engine calls these from its own thread (and decodes from the stage threads), in the step
loop, so an observer must be cheap and thread-safe. The engine never imports the HTTP layer:
the server hands it an observer that feeds Prometheus.
"""

from __future__ import annotations

from omni.request import Request


class EngineObserver:
    """Does nothing; subclasses override what they record."""

    def on_forward(self, seconds: float, batch_size: int) -> None:
        """One denoise forward of `batch_size` requests took `seconds`."""

    def on_stage(self, kind: str, seconds: float, num_requests: int) -> None:
        """One encode or decode call (`kind`) over `num_requests` requests took `seconds`."""

    def on_finished(self, request: Request) -> None:
        """A request finished with its output; its times and params are filled in."""

    def on_failed(self, reason: str, count: int = 1) -> None:
        """`count` requests left without an output; `reason` is "failed" or "aborted"."""
