"""Whether the cluster's nodes can hold the replicas asked for, checked before deploying them:
Serve would otherwise wait for resources that never come, and /health say "loading" forever."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import ray

EPSILON = 1e-9  # 2 CPUs hold four 0.5-CPU shares, whatever the floats say


def replica_demand(options: dict[str, Any]) -> dict[str, float]:
    """What one replica takes from a node: its placement group's bundles (kept on one node),
    or else its actor's own resources. Ray's default for an actor is no CPU."""
    bundles = options.get("placement_group_bundles")
    if bundles:
        demand: dict[str, float] = {}
        for bundle in bundles:
            for name, amount in bundle.items():
                demand[name] = demand.get(name, 0.0) + amount
    else:
        actor = options.get("ray_actor_options", {})
        demand = {"CPU": actor.get("num_cpus", 0.0), "GPU": actor.get("num_gpus", 0.0)}
        demand.update(actor.get("resources", {}))
    return {name: float(amount) for name, amount in demand.items() if amount}


def replicas_that_fit(demand: dict[str, float], nodes: Iterable[dict[str, float]]) -> int:
    """How many replicas the nodes hold at most: each lies on one node."""
    fit = 0
    for node in nodes:
        fit += min(
            (math.floor(node.get(name, 0.0) / amount + EPSILON) for name, amount in demand.items()),
            default=0,
        )
    return fit


def placement_problem(options: dict[str, Any], nodes: list[dict[str, float]]) -> str | None:
    """Why the nodes (each node's total resources) cannot hold `options["num_replicas"]`
    replicas, or None where they can."""
    asked = options["num_replicas"]
    demand = replica_demand(options)
    fit = replicas_that_fit(demand, nodes) if demand else asked
    if fit >= asked:
        return None
    has = {name: sum(node.get(name, 0.0) for node in nodes) for name in demand}
    return (
        f"{asked} replicas were asked for (--data-parallel-size), each taking {show(demand)} "
        f"on one node, but the cluster's {len(nodes)} node(s) have {show(has)} in all and hold "
        f"{fit} such replica(s)"
    )


def node_resources() -> list[dict[str, float]]:
    """Each live node's total resources, in the joined cluster."""
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def show(resources: dict[str, float]) -> str:
    return ", ".join(f"{amount:g} {name}" for name, amount in sorted(resources.items()))
