"""Engine replicas on a Ray cluster (the optional `cluster` extra). The engine never imports Ray;
this package wraps it: a Serve deployment of replicas, and a pool the HTTP side talks to."""

from omni.cluster.pool import ReplicaPool

__all__ = ["ReplicaPool"]
