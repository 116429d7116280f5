"""Where replicas post their status: a small named actor that every front end reads."""

from __future__ import annotations

import time

import ray

from omni.engine import ReplicaStatus

NAMESPACE = "omni"
BOARD_NAME = "omni-replica-board"
REPORT_INTERVAL_S = 0.5
STALE_AFTER_S = 3.0  # a replica silent this long is gone (killed, or its node lost)


@ray.remote(num_cpus=0)
class ReplicaBoard:
    def __init__(self) -> None:
        self._posted: dict[str, tuple[float, ReplicaStatus]] = {}

    def post(self, status: ReplicaStatus) -> None:
        # Stamped with the board's own clock: replicas on other nodes may disagree about the time.
        self._posted[status.replica] = (time.monotonic(), status)

    def read(self) -> list[ReplicaStatus]:
        now = time.monotonic()
        self._posted = {k: v for k, v in self._posted.items() if now - v[0] < STALE_AFTER_S}
        return sorted((status for _, status in self._posted.values()), key=lambda s: s.replica)


def open_board() -> ray.actor.ActorHandle:
    """The cluster's board; the first front end to ask creates it."""
    return ReplicaBoard.options(
        name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()
