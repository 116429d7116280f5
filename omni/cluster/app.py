"""The replicas as a Serve application of their own, for `serve run` and KubeRay's RayService:

    serve run --name omni omni.cluster.app:build model=/models/flux num_replicas=4

A front end started with `--ray-address auto` then joins the application named omni instead of
starting replicas of its own. Every other argument is an EngineConfig field, given as text.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import ray
from ray.serve import Application

from omni.cluster.deploy import replica_app, replica_options
from omni.config import EngineConfig

FIELD_TYPES = {f.name: f.type for f in fields(EngineConfig)}


def build(args: dict[str, str]) -> Application:
    args = dict(args)
    num_replicas = int(args.pop("num_replicas", "1"))
    unknown = set(args) - set(FIELD_TYPES)
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; known: {sorted(FIELD_TYPES)}")
    config = EngineConfig(**{name: parse(FIELD_TYPES[name], value) for name, value in args.items()})
    gpus = ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else 0.0
    return replica_app(config, replica_options(config, num_replicas, gpus))


def parse(annotation: str, value: Any) -> Any:
    """A field's value from Serve's text arguments, by the field's annotation."""
    if not isinstance(value, str):  # YAML (a RayService's serveConfigV2) gives typed values
        return value
    if value == "None" and "None" in annotation:
        return None
    if annotation.startswith("int"):
        return int(value)
    if annotation.startswith("float"):
        return float(value)
    if annotation.startswith("bool"):
        return value.lower() in ("1", "true", "yes")
    return value
