"""`--data-parallel-size 2 --api-server-count 2` on a local Ray cluster: requests spread over both
replicas and both front ends, and a replica killed mid-request costs no request a hang or an
unexplained 500, and comes back; a front end killed leaves the port served, and comes back."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.helpers import assert_same_image
from tests.http.servers import ServerProcess, open_request, stats, wait_until
from tests.http.test_edits import decode

NUM_REPLICAS = 2
NUM_FRONT_ENDS = 2
QUICK = {"prompt": "a red fox", "size": "64x64", "num_inference_steps": 2}
STEPS = {"num_inference_steps": 4}  # for two partial images, each a step apart
# Six of these take a replica about 8 s on this CPU: long past the second or so by which the
# replicas' posted counters lag, so the replica the test kills is still running them (40 steps
# took one second, and a replica seen busy had sometimes finished before the kill).
SLOW = {"prompt": "a slow fox", "size": "256x256", "num_inference_steps": 400, "n": 2}
ENDLESS = {**QUICK, "size": "1024x1024", "num_inference_steps": 1000}
RESTART_TIMEOUT_S = 240.0
# Each front end polls the replicas' board on its own, half a second apart at most: counters are
# compared through one kept-alive connection, so through one front end's view.
PINNED = requests.Session()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One Ray cluster for the module: the server starts it and stops it."""
    folder = tmp_path_factory.mktemp("replicas")
    args = ["--data-parallel-size", str(NUM_REPLICAS), "--profile-seconds", "0"]
    args += ["--api-server-count", str(NUM_FRONT_ENDS)]
    process = ServerProcess([*args, "--storage-path", str(folder / "storage")], folder / "log")
    try:
        process.wait_healthy()
        wait_until(lambda: len(ready_replicas(process.url)) == NUM_REPLICAS, 60, "2 replicas")
        wait_for_front_ends(process.url)
        yield process
    finally:
        process.stop()


def front_end_pids(url: str, count: int = 20) -> dict[int, int]:
    """Index to pid of the front ends that answered `count` requests, each on a new connection."""
    seen = {}
    for _ in range(count):
        answer = stats(url)["front_end"]
        seen[answer["index"]] = answer["pid"]
    return seen


def wait_for_front_ends(url: str) -> dict[int, int]:
    """Index to pid of every front end, once each has answered."""
    pids: dict[int, int] = {}

    def all_answered() -> bool:
        pids.update(front_end_pids(url))
        return len(pids) == NUM_FRONT_ENDS

    wait_until(all_answered, 120, f"{NUM_FRONT_ENDS} front ends to answer", interval=0.5)
    return pids


def is_gone(pid: int) -> bool:
    """Whether the process has exited and been reaped (by its parent front end)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def pinned_stats(url: str) -> dict[str, Any]:
    response = PINNED.get(f"{url}/v1/stats", timeout=10)
    response.raise_for_status()
    return response.json()


def ready_replicas(url: str) -> list[dict[str, Any]]:
    return [r for r in pinned_stats(url).get("replicas", []) if r["state"] == "ready"]


def post_image(url: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{url}/v1/images/generations", json=body, timeout=RESTART_TIMEOUT_S)


def post_many(url: str, body: dict[str, Any], count: int) -> list[requests.Response]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: post_image(url, body), range(count)))


def finished_by_replica(url: str) -> dict[str, int]:
    return {r["replica"]: r["stats"]["num_finished"] for r in ready_replicas(url)}


def test_concurrent_requests_all_succeed_and_both_replicas_serve(server: ServerProcess) -> None:
    before = finished_by_replica(server.url)

    responses = post_many(server.url, QUICK, 32)

    assert [r.status_code for r in responses] == [200] * 32
    assert all(len(r.json()["data"]) == 1 for r in responses)
    # Replicas post their counters every half second: wait for the last ones to arrive.
    wait_until(
        lambda: sum(finished_by_replica(server.url).values()) - sum(before.values()) >= 32,
        30,
        "the replicas' counters to show the 32 requests",
    )
    after = finished_by_replica(server.url)
    served = {replica: after[replica] - before.get(replica, 0) for replica in after}
    assert len(served) == NUM_REPLICAS
    assert all(count > 0 for count in served.values()), served
    assert pinned_stats(server.url)["num_finished"] == sum(after.values())


def test_requests_over_new_connections_are_spread_over_the_front_ends(
    server: ServerProcess,
) -> None:
    responses = post_many(server.url, QUICK, 16)  # requests opens a connection for each

    assert [r.status_code for r in responses] == [200] * 16
    answered = {r.headers["x-omni-front-end"] for r in responses}
    assert answered == {str(index) for index in range(NUM_FRONT_ENDS)}


def test_a_killed_front_end_leaves_the_port_served_and_is_started_again(
    server: ServerProcess,
) -> None:
    victim = wait_for_front_ends(server.url)[1]

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: is_gone(victim), 30, "the first front end to reap the killed one")
    PINNED.close()  # its connection may have been to the killed one; a new one opens on use

    responses = post_many(server.url, QUICK, 8)
    assert [r.status_code for r in responses] == [200] * 8
    pids = wait_for_front_ends(server.url)
    assert victim not in pids.values()


def test_metrics_count_each_replica_and_add_up_their_histograms(server: ServerProcess) -> None:
    before = pinned_stats(server.url)["num_finished"]
    post_image(server.url, QUICK).raise_for_status()
    wait_until(lambda: pinned_stats(server.url)["num_finished"] > before, 30, "the request's count")
    replicas = [r["replica"] for r in ready_replicas(server.url)]

    text = PINNED.get(f"{server.url}/metrics", timeout=10).text

    for replica in replicas:
        assert f'omni:replica_up{{model_name="omni-tiny",replica="{replica}"}} 1.0' in text
    parsed = [s for family in text_string_to_metric_families(text) for s in family.samples]
    samples = {(s.name, s.labels.get("replica"), s.labels.get("le")): s.value for s in parsed}
    success = {
        s.labels["finished_reason"]: s.value
        for s in parsed
        if s.name == "omni:request_success_total"
    }
    finished = {r: samples["omni:replica_requests_finished_total", r, None] for r in replicas}
    assert sum(finished.values()) > before
    assert success["finished"] == sum(finished.values())  # the front end's total
    # Each request a replica finished is one observation of its latency and of its steps, and
    # the histograms in total are the replicas' added up, bucket by bucket.
    for name in ("e2e_request_latency_seconds", "steps_per_request"):
        per_replica = {r: samples[f"omni:replica_{name}_count", r, None] for r in replicas}
        assert per_replica == finished, name
        assert samples[f"omni:{name}_count", None, None] == sum(finished.values()), name
        buckets = {le for (sample, _, le) in samples if sample == f"omni:{name}_bucket"}
        for le in buckets:
            each = [samples[f"omni:replica_{name}_bucket", r, le] for r in replicas]
            assert samples[f"omni:{name}_bucket", None, le] == sum(each), (name, le)


def test_a_stream_through_the_replicas_sends_its_partial_images_then_the_image(
    server: ServerProcess,
) -> None:
    previews_before = pinned_stats(server.url)["num_previews"]
    fields = {"prompt": "a red fox", "size": "64x64", "extra_body": {"seed": 5, **STEPS}}
    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)

    events = list(client.images.generate(stream=True, partial_images=2, **fields))

    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    images = [decode(e.b64_json) for e in events]
    assert [(i.format, i.size) for i in images] == [("PNG", (64, 64))] * 3
    assert_same_image(images[-1], decode(client.images.generate(**fields).data[0].b64_json))
    wait_until(
        lambda: pinned_stats(server.url)["num_previews"] == previews_before + 2,
        30,
        "the replicas' counters to show the two partial images",
    )


def test_a_field_a_replica_refuses_is_a_400_naming_it(server: ServerProcess) -> None:
    response = post_image(server.url, {**QUICK, "size": "63x63"})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "size"
    assert post_image(server.url, QUICK).status_code == 200


def test_a_client_that_disconnects_aborts_its_requests_on_the_replica(
    server: ServerProcess,
) -> None:
    wait_until_idle(server.url)  # else a replica's last count, still busy, passes for this one
    aborted_before = pinned_stats(server.url)["num_aborted"]
    sock = open_request(server.url, "/v1/images/generations", json.dumps(ENDLESS).encode())
    wait_until(lambda: busy_replica(server.url) is not None, 60, "a replica to take the request")

    sock.close()

    wait_until(
        lambda: (
            busy_replica(server.url) is None
            and pinned_stats(server.url)["num_aborted"] > aborted_before
        ),
        60,
        "the replica to abort the request",
    )


def test_a_killed_replica_fails_or_reruns_its_requests_and_comes_back(
    server: ServerProcess,
) -> None:
    wait_until_idle(server.url)
    with ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(post_image, server.url, SLOW) for _ in range(6)]
        wait_until(lambda: busy_replica(server.url) is not None, 60, "a replica to be busy")
        victim = busy_replica(server.url)
        os.kill(victim["pid"], signal.SIGKILL)
        responses = [future.result() for future in slow]

    for response in responses:  # none hangs (the timeout would raise); each says what happened
        if response.status_code != 200:
            error = response.json()["error"]
            assert (response.status_code, error["code"]) == (503, "replica_lost"), error
            assert "send it again" in error["message"]
            assert response.headers["Retry-After"]
    # The replica's requests were either answered with that error or run again elsewhere.
    rerun = "running them again" in server.log_path.read_text()
    assert rerun or any(r.status_code == 503 for r in responses)
    # The other replica serves while Serve restarts the lost one.
    assert [r.status_code for r in post_many(server.url, QUICK, 4)] == [200] * 4
    wait_until(
        lambda: replaced(server.url, victim["pid"]), RESTART_TIMEOUT_S, "Serve to restart it"
    )
    assert [r.status_code for r in post_many(server.url, QUICK, 8)] == [200] * 8


def busy_replica(url: str) -> dict[str, Any] | None:
    for replica in ready_replicas(url):
        if replica["stats"]["num_running"] + replica["stats"]["num_waiting"] > 0:
            return replica
    return None


def wait_until_idle(url: str) -> None:
    wait_until(lambda: busy_replica(url) is None, 30, "the replicas to finish earlier requests")


def replaced(url: str, lost_pid: int) -> bool:
    replicas = ready_replicas(url)
    return len(replicas) == NUM_REPLICAS and lost_pid not in {r["pid"] for r in replicas}


def test_replica_flags_set_their_fields(tmp_path: Path) -> None:
    from omni.serve import parse_config

    config = parse_config(["--data-parallel-size", "3", "--ray-address", "auto"])

    assert (config.data_parallel_size, config.ray_address) == (3, "auto")
    assert config.uses_replicas
    assert not parse_config([]).uses_replicas
    shared = parse_config(["--data-parallel-size", "2", "--api-server-count", "4"])
    assert (shared.api_server_count, shared.front_end_index) == (4, 0)
