"""The cluster package's plain parts, without a cluster: placement, counters, errors."""

from __future__ import annotations

import pickle
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve.exceptions import BackPressureError

from omni.cluster import deploy
from omni.cluster.app import build
from omni.cluster.deploy import replica_options
from omni.cluster.errors import as_omni_error
from omni.cluster.placement import placement_problem, replica_demand, replicas_that_fit
from omni.cluster.stats import merge_stats
from omni.config import EngineConfig
from omni.engine import EngineStats, ReplicaStatus
from omni.engine.histograms import BATCH, E2E, ENGINE_HISTOGRAMS, HistogramObserver
from omni.errors import InvalidRequestError, RequestFailedError
from omni.http.errors import from_omni_error
from omni.http.metric_collectors import HistogramCollector


def test_each_replica_takes_as_many_requests_as_its_engine_holds() -> None:
    config = EngineConfig(max_num_running=3, max_num_waiting=5)

    options = replica_options(config, num_replicas=4, num_gpus=0)

    assert options["num_replicas"] == 4
    assert options["max_ongoing_requests"] == 3 + 5
    assert options["max_queued_requests"] >= 1


def test_without_gpus_replicas_take_a_share_of_a_cpu() -> None:
    options = replica_options(EngineConfig(), num_replicas=2, num_gpus=0)

    assert 0 < options["ray_actor_options"]["num_cpus"] <= 1
    assert "num_gpus" not in options["ray_actor_options"]


def test_a_cpu_device_takes_no_gpu_even_where_the_cluster_has_some() -> None:
    options = replica_options(EngineConfig(device="cpu"), num_replicas=2, num_gpus=8)

    assert "num_gpus" not in options["ray_actor_options"]


def test_with_gpus_each_replica_takes_one() -> None:
    options = replica_options(EngineConfig(), num_replicas=2, num_gpus=8)

    assert options["ray_actor_options"]["num_gpus"] == 1
    assert "placement_group_bundles" not in options


def test_cfg_parallel_replicas_take_a_pair_of_gpus_on_one_node() -> None:
    options = replica_options(EngineConfig(cfg_parallel_size=2), num_replicas=2, num_gpus=8)

    assert options["ray_actor_options"]["num_gpus"] == 2
    assert options["placement_group_bundles"] == [{"CPU": 1, "GPU": 2}]
    assert options["placement_group_strategy"] == "STRICT_PACK"


def test_replica_counters_add_up() -> None:
    one = EngineStats(num_running=1, num_finished=4, max_batch_size_seen=3)
    one.batch_size_counts.update({1: 2, 3: 1})
    two = EngineStats(num_waiting=2, num_finished=6, max_batch_size_seen=5)
    two.batch_size_counts.update({1: 1})

    total = merge_stats([one, two])

    assert (total.num_running, total.num_waiting, total.num_finished) == (1, 2, 10)
    assert total.max_batch_size_seen == 5
    assert total.batch_size_counts == {1: 3, 3: 1}


def test_a_lost_replica_is_a_503_that_says_to_retry() -> None:
    error = from_omni_error(as_omni_error(ActorDiedError()))

    assert error.status == 503
    assert "send it again" in error.message
    assert "Retry-After" in error.headers


def test_full_replicas_are_a_503_with_retry_after() -> None:
    error = from_omni_error(as_omni_error(BackPressureError(10, 10)))

    assert error.status == 503
    assert "Retry-After" in error.headers


def test_an_error_raised_in_a_replica_keeps_its_status_and_field() -> None:
    raised = InvalidRequestError("width must be a multiple of 16", param="size")
    wrapped = RayTaskError("validate", "traceback", raised)

    error = from_omni_error(as_omni_error(wrapped))

    assert (error.status, error.param) == (400, "size")
    assert "multiple of 16" in error.message


def test_an_unexpected_error_in_a_replica_is_a_500_with_its_message() -> None:
    wrapped = RayTaskError("generate_many", "traceback", KeyError("latents"))

    translated = as_omni_error(wrapped)

    assert isinstance(translated, RequestFailedError)
    assert "KeyError" in str(translated)


def test_a_rayservice_builds_the_replicas_from_text_and_yaml_arguments() -> None:
    args = {"model": "omni-tiny", "num_replicas": "3", "max_num_running": 8, "cache": "fbcache"}

    bound = build(args)._bound_deployment

    assert bound._deployment_config.num_replicas == 3
    (config, _) = bound.init_args
    assert config == EngineConfig(model="omni-tiny", max_num_running=8, cache="fbcache")


def test_a_rayservice_argument_that_is_no_field_is_refused() -> None:
    with pytest.raises(ValueError, match="max_num_runing"):
        build({"max_num_runing": "8"})


class FakePool:
    """What the collector reads of a pool: the statuses its replicas posted."""

    def __init__(self, statuses: list[ReplicaStatus]) -> None:
        self.statuses = statuses

    def replicas(self) -> list[ReplicaStatus]:
        return self.statuses


def posted(replica: str, batch_sizes: list[int]) -> ReplicaStatus:
    """A replica's status after forwards of these batch sizes."""
    observer = HistogramObserver()
    for size in batch_sizes:
        observer.on_forward(0.01, size)
    histograms = observer.histograms()
    return ReplicaStatus(replica, 1, "node", "ready", None, 1, EngineStats(), histograms)


def histogram_samples(statuses: list[ReplicaStatus]) -> dict[str, dict[str, float]]:
    """Family name to {sample name with its labels: value}, as Prometheus would parse them."""
    registry = CollectorRegistry()
    registry.register(HistogramCollector(FakePool(statuses), HistogramObserver(), "m"))  # type: ignore[arg-type]
    families = text_string_to_metric_families(generate_latest(registry).decode())
    return {
        family.name: {
            f"{s.name}{sorted((k, v) for k, v in s.labels.items() if k != 'model_name')}": s.value
            for s in family.samples
        }
        for family in families
    }


def test_replica_histograms_add_up_bucket_by_bucket() -> None:
    one, two = [1, 3, 3, 300], [2, 1000]
    statuses = [posted("a", one), posted("b", two)]

    samples = histogram_samples(statuses)

    total = samples[f"omni:{BATCH.name}"]
    each = samples[f"omni:replica_{BATCH.name}"]
    assert total[f"omni:{BATCH.name}_count[]"] == len(one) + len(two)
    assert total[f"omni:{BATCH.name}_sum[]"] == sum(one) + sum(two)
    for bound in BATCH.buckets:
        le = [("le", str(float(bound)))]
        expected = sum(size <= bound for size in one + two)
        assert total[f"omni:{BATCH.name}_bucket{le}"] == expected, bound
        for replica, sizes in (("a", one), ("b", two)):
            labels = sorted([*le, ("replica", replica)])
            assert each[f"omni:replica_{BATCH.name}_bucket{labels}"] == sum(
                size <= bound for size in sizes
            )
    assert total[f"omni:{BATCH.name}_bucket[('le', '+Inf')]"] == len(one) + len(two)
    per_replica = [each[f"omni:replica_{BATCH.name}_count[('replica', '{r}')]"] for r in "ab"]
    assert per_replica == [len(one), len(two)]
    # Every histogram the engine keeps is there in total and per replica, even one never used.
    for spec in ENGINE_HISTOGRAMS:
        assert f"omni:{spec.name}" in samples
        assert f"omni:replica_{spec.name}" in samples


def test_a_replica_posts_only_the_buckets_it_used() -> None:
    status = posted("a", [1, 1, 2])

    assert status.histograms[BATCH.name].counts == (2, 1)  # two at <=1, one at <=2, none past
    assert status.histograms[E2E.name].counts == ()
    assert len(pickle.dumps(status.histograms)) < 2048


def test_without_replicas_the_local_histograms_are_reported() -> None:
    local = HistogramObserver()
    local.on_forward(0.5, 4)
    registry = CollectorRegistry()
    registry.register(HistogramCollector(FakePool([]), local, "m"))  # type: ignore[arg-type]

    text = generate_latest(registry).decode()

    assert f'omni:{BATCH.name}_count{{model_name="m"}} 1.0' in text
    assert f'omni:{BATCH.name}_sum{{model_name="m"}} 4.0' in text
    assert "replica_" not in text


def test_more_cpu_replicas_than_the_nodes_hold_are_refused_naming_both() -> None:
    options = replica_options(EngineConfig(), num_replicas=8, num_gpus=0)
    share = options["ray_actor_options"]["num_cpus"]

    problem = placement_problem(options, [{"CPU": 2.0, "memory": 1e9}])

    assert problem is not None
    assert "8 replicas" in problem
    assert f"{share:g} CPU" in problem
    assert "2 CPU" in problem
    assert f"hold {int(2 / share)} such" in problem


def test_replicas_the_nodes_hold_pass() -> None:
    options = replica_options(EngineConfig(), num_replicas=4, num_gpus=0)
    share = options["ray_actor_options"]["num_cpus"]

    assert placement_problem(options, [{"CPU": 4 * share}]) is None
    assert placement_problem(options, [{"CPU": 2 * share}, {"CPU": 2 * share}]) is None


def test_more_gpu_replicas_than_gpus_are_refused() -> None:
    options = replica_options(EngineConfig(), num_replicas=4, num_gpus=2)

    problem = placement_problem(options, [{"CPU": 64.0, "GPU": 2.0}])

    assert problem is not None
    assert "2 GPU" in problem


def test_a_cfg_pair_needs_two_gpus_on_one_node() -> None:
    options = replica_options(EngineConfig(cfg_parallel_size=2), num_replicas=1, num_gpus=2)
    one_gpu_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]

    assert replica_demand(options)["GPU"] == 2
    assert replicas_that_fit(replica_demand(options), one_gpu_nodes) == 0
    assert placement_problem(options, one_gpu_nodes) is not None
    assert placement_problem(options, [{"CPU": 8.0, "GPU": 2.0}]) is None


def test_replicas_still_unplaced_at_the_deadline_are_removed_with_serves_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Serve's status as a joined cluster's that never grows: deploying, with its message."""
    reason = "1 replicas that have taken more than 30s to be scheduled"
    waiting = SimpleNamespace(message=reason)
    app = SimpleNamespace(status="DEPLOYING", message="", deployments={"EngineReplica": waiting})
    removed = []
    monkeypatch.setattr(
        deploy.serve, "status", lambda: SimpleNamespace(applications={deploy.APP_NAME: app})
    )
    monkeypatch.setattr(deploy.serve, "delete", removed.append)

    with pytest.raises(deploy.PlacementError, match=reason):
        deploy.wait_running(deadline=time.monotonic())

    assert removed == [deploy.APP_NAME]
