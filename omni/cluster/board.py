"""Where replicas post their status, and front ends the calls their clients gave up on: a small
named actor that every front end reads and every replica posts to."""

from __future__ import annotations

import time

import ray

from omni.engine import ReplicaStatus

NAMESPACE = "omni"
BOARD_NAME = "omni-replica-board"
REPORT_INTERVAL_S = 0.5
STALE_AFTER_S = 3.0  # a replica silent this long is gone (killed, or its node lost)
# Serve drops a cancelled call that no replica has taken yet; one that reaches a replica after
# this long would have to have sat in Serve's queue for it, past any client's patience.
CANCEL_KEPT_S = 120.0


class Board:
    def __init__(self) -> None:
        self._posted: dict[str, tuple[float, ReplicaStatus]] = {}
        self._cancelled: dict[str, float] = {}

    def post(self, status: ReplicaStatus) -> list[str]:
        """Keep the status; answer the calls cancelled in the last CANCEL_KEPT_S, for the
        replica to stop any it runs (Serve's own cancellation can be lost in a race)."""
        # Stamped with the board's own clock: replicas on other nodes may disagree about the time.
        now = time.monotonic()
        self._posted[status.replica] = (now, status)
        self._cancelled = {k: t for k, t in self._cancelled.items() if now - t < CANCEL_KEPT_S}
        return list(self._cancelled)

    def cancel(self, call_id: str) -> None:
        self._cancelled[call_id] = time.monotonic()

    def read(self) -> list[ReplicaStatus]:
        now = time.monotonic()
        self._posted = {k: v for k, v in self._posted.items() if now - v[0] < STALE_AFTER_S}
        return sorted((status for _, status in self._posted.values()), key=lambda s: s.replica)


ReplicaBoard = ray.remote(num_cpus=0)(Board)


def open_board() -> ray.actor.ActorHandle:
    """The cluster's board; the first front end to ask creates it."""
    return ReplicaBoard.options(
        name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()
