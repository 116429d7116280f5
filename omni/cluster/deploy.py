"""Joining or starting a Ray cluster, and placing the replicas on it."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.serve.api import RunTarget
from ray.serve.handle import DeploymentHandle

from omni.cluster.board import NAMESPACE, open_board
from omni.cluster.placement import node_resources, placement_problem
from omni.cluster.replica import EngineReplica
from omni.config import EngineConfig

logger = logging.getLogger("omni.cluster")


class PlacementError(RuntimeError):
    """The cluster cannot hold the replicas asked for."""


APP_NAME = "omni"
# On a machine without GPUs, replicas take CPU shares, so a 2-core CI machine holds two of them.
CPU_SHARE_PER_REPLICA = 0.5
LOAD_TIMEOUT_S = 1800.0  # a large model loading from a cold disk
GROW_TIMEOUT_S = 600.0  # for a joined cluster's autoscaler to add the nodes replicas need
START_TIMEOUT_S = GROW_TIMEOUT_S + LOAD_TIMEOUT_S
DEPLOY_POLL_S = 0.5
HEALTH_CHECK_PERIOD_S = 2.0
JOINABLE = ("DEPLOYING", "RUNNING", "UNHEALTHY")  # Serve's application states


def connect(ray_address: str | None) -> None:
    """Join the cluster at `ray_address` (auto or HOST:PORT), or start a local one."""
    if ray.is_initialized():
        return
    ray.init(
        address=ray_address or "local",
        namespace=NAMESPACE,
        include_dashboard=False,
        configure_logging=False,
    )


def join(ray_address: str | None) -> DeploymentHandle | None:
    """The handle of replicas already on the cluster (started by another front end, or by a
    KubeRay RayService), if there are some; the cluster is joined (or started) either way."""
    connect(ray_address)
    open_board()
    serve.start(proxy_location="Disabled")
    existing = serve.status().applications.get(APP_NAME)
    if existing is None or existing.status not in JOINABLE:
        return None
    logger.info("joining the engine replicas already on the cluster (%s)", existing.status)
    return serve.get_app_handle(APP_NAME)


def cluster_address() -> str:
    """HOST:PORT of the joined cluster's GCS, for other processes to join it by."""
    return ray.get_runtime_context().gcs_address


def start_replicas(config: EngineConfig, num_replicas: int, can_grow: bool) -> DeploymentHandle:
    """Returns once every replica has loaded its model. Raises PlacementError at once where the
    cluster's nodes cannot hold them and the cluster cannot grow (`can_grow`: one joined, which
    may have an autoscaler, as KubeRay's); otherwise once START_TIMEOUT_S has passed."""
    options = replica_options(config, num_replicas, ray.cluster_resources().get("GPU", 0.0))
    problem = placement_problem(options, node_resources())
    if problem and not can_grow:
        raise PlacementError(
            f"{problem}; the local cluster omni started cannot grow: ask for fewer replicas, "
            "or start a larger cluster and join it with --ray-address"
        )
    if problem:
        logger.warning(
            "%s; waiting up to %.0f s for the cluster to add nodes", problem, START_TIMEOUT_S
        )
    logger.info("starting %d engine replicas on Ray: %s", num_replicas, options)
    target = RunTarget(replica_app(config, options), name=APP_NAME, route_prefix=None)
    serve.run_many([target], wait_for_applications_running=False)
    wait_running(time.monotonic() + START_TIMEOUT_S)
    return serve.get_app_handle(APP_NAME)


def wait_running(deadline: float) -> None:
    """Until the replicas all run; their deployment's failure, or the deadline, raises with
    what Serve says about them (a replica that cannot be placed: what it needs and what is
    free)."""
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is None:  # a stop removed them meanwhile
            raise RuntimeError("the engine replicas were removed while they started")
        if app.status == "RUNNING":
            return
        said = "; ".join(d.message for d in app.deployments.values() if d.message)
        if app.status == "DEPLOY_FAILED":
            raise RuntimeError(f"the engine replicas failed to deploy: {said or app.message}")
        if time.monotonic() > deadline:
            serve.delete(APP_NAME)  # or Serve keeps them waiting for resources
            raise PlacementError(
                f"the engine replicas were not all running after {START_TIMEOUT_S:.0f} s "
                f"(START_TIMEOUT_S): {said or 'Serve gave no reason'}"
            )
        time.sleep(DEPLOY_POLL_S)


def replica_app(config: EngineConfig, options: dict[str, Any]) -> Application:
    deployment = serve.deployment(EngineReplica, name="EngineReplica")
    return deployment.options(**options).bind(config, LOAD_TIMEOUT_S)


def replica_options(config: EngineConfig, num_replicas: int, num_gpus: float) -> dict[str, Any]:
    """One GPU per replica where the cluster has GPUs (a pair, kept on one node, for
    CFG-parallel); a CPU share otherwise. A replica takes as many requests at once as its
    engine holds; past that, each front end queues up to one engine's waiting room more."""
    capacity = config.max_num_running + config.max_num_waiting
    options: dict[str, Any] = {
        "num_replicas": num_replicas,
        "max_ongoing_requests": capacity,
        "max_queued_requests": config.max_num_waiting,
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "logging_config": {"enable_access_log": False},  # as omni's own, off by default
    }
    if config.device == "cpu" or num_gpus == 0:
        options["ray_actor_options"] = {"num_cpus": CPU_SHARE_PER_REPLICA}
        return options
    gpus = config.cfg_parallel_size
    options["ray_actor_options"] = {"num_cpus": 1, "num_gpus": gpus}
    if gpus > 1:  # the CFG worker is a child process: both GPUs must be the replica's own
        options["placement_group_bundles"] = [{"CPU": 1, "GPU": gpus}]
        options["placement_group_strategy"] = "STRICT_PACK"
    return options


def undeploy(started_replicas: bool, started_cluster: bool) -> None:
    if not ray.is_initialized():  # the cluster was never reached: nothing to undo
        return
    if started_replicas:
        serve.delete(APP_NAME)
    if started_cluster:
        serve.shutdown()
        ray.shutdown()
