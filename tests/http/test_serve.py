"""`python -m omni.serve`: flags map one-to-one onto the config, and one log line says ready."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import pytest

from omni.config import EngineConfig
from omni.flags import build_parser
from omni.http import ServerConfig
from omni.http.config import MAX_API_SERVER_COUNT
from omni.serve import parse_config
from tests.http.servers import ServerProcess

EVERY_FLAG = [
    "--model", "/models/flux-dev",
    "--served-model-name", "flux",
    "--device", "cpu",
    "--dtype", "bfloat16",
    "--max-batch-size", "4",
    "--max-num-running", "12",
    "--max-num-waiting", "34",
    "--cfg-parallel-size", "2",
    "--attention-backend", "sdpa",
    "--max-output-pixels", "1048576",
    "--cache", "fbcache",
    "--cache-threshold", "0.1",
    "--host", "0.0.0.0",
    "--port", "9001",
    "--api-key", "sk-flag",
    "--max-body-bytes", "4096",
    "--storage-path", "/srv/omni",
    "--video-retention-seconds", "86400",
    "--access-log",
    "--no-playground",
    "--keepalive-timeout", "5",
    "--request-timeout", "30",
    "--send-timeout", "20",
    "--job-store", "postgresql://omni@db.internal/omni",
    "--artifact-store", "s3://videos/omni",
    "--s3-endpoint-url", "http://minio.internal:9000",
    "--presigned-urls",
    "--lease-seconds", "12.5",
]  # fmt: skip


def config_fields() -> set[str]:
    # front_end_index is set by the first of --api-server-count front ends for the others.
    server = {f.name for f in fields(ServerConfig)} - {"engine", "front_end_index"}
    return server | {f.name for f in fields(EngineConfig)}


def test_every_config_field_has_exactly_one_flag() -> None:
    destinations = {a.dest for a in build_parser()._actions} - {"help"}

    assert destinations == config_fields()


def test_flags_set_their_fields() -> None:
    config = parse_config(EVERY_FLAG)

    assert config.engine == EngineConfig(
        model="/models/flux-dev",
        served_model_name="flux",
        device="cpu",
        dtype="bfloat16",
        max_batch_size=4,
        max_num_running=12,
        max_num_waiting=34,
        cfg_parallel_size=2,
        attention_backend="sdpa",
        max_output_pixels=1048576,
        cache="fbcache",
        cache_threshold=0.1,
    )
    assert (config.host, config.port, config.api_key) == ("0.0.0.0", 9001, "sk-flag")
    assert (config.max_body_bytes, config.storage_path) == (4096, Path("/srv/omni"))
    assert config.video_retention_seconds == 86400
    assert config.access_log
    assert not config.playground
    assert (config.keepalive_timeout, config.request_timeout, config.send_timeout) == (5, 30, 20)
    assert (config.job_store, config.artifact_store, config.s3_endpoint_url) == (
        "postgresql://omni@db.internal/omni",
        "s3://videos/omni",
        "http://minio.internal:9000",
    )
    assert config.presigned_urls and config.lease_seconds == 12.5


def test_no_flags_give_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMNI_API_KEY", "OMNI_STORAGE_PATH", "VLLM_OMNI_STORAGE_PATH"):
        monkeypatch.delenv(name, raising=False)

    assert parse_config([]) == ServerConfig()


def test_api_key_and_storage_path_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNI_API_KEY", "sk-env")
    monkeypatch.delenv("OMNI_STORAGE_PATH", raising=False)
    monkeypatch.setenv("VLLM_OMNI_STORAGE_PATH", "/data/videos")
    from_alias = parse_config([])
    monkeypatch.setenv("OMNI_STORAGE_PATH", "/data/omni")

    assert from_alias.api_key == "sk-env"
    assert from_alias.storage_path == Path("/data/videos")
    assert parse_config([]).storage_path == Path("/data/omni")
    assert parse_config(["--api-key", "sk-flag"]).api_key == "sk-flag"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--max-batch-size", "0"], "max_batch_size"),
        (["--dtype", "float64"], "--dtype"),
        (["--port", "70000"], "port"),
        (["--device", "tpu"], "device"),
        (["--send-timeout", "0"], "send_timeout"),
        (["--cache", "teacache"], "--cache"),
        (["--cache", "fbcache", "--cache-threshold", "0"], "threshold must be above 0"),
        (["--cache-threshold", "0.2"], "a cache of type none takes no threshold"),
        (["--data-parallel-size", "0"], "data_parallel_size"),
        (["--job-store", "mysql://db/omni"], "--job-store must be a postgresql:// URL"),
        (["--artifact-store", "/srv/videos"], "--artifact-store: an artifact store must be s3://"),
        (["--lease-seconds", "0"], "lease_seconds"),
        (["--presigned-urls"], "presigned_urls needs an artifact_store"),
        (["--api-server-count", "2"], "--api-server-count above 1 needs the engine on Ray"),
        (["--api-server-count", "0"], "--api-server-count must be between 1 and"),
        ([f"--api-server-count={MAX_API_SERVER_COUNT + 1}"], "--api-server-count must be between"),
    ],
)
def test_bad_flags_exit_with_a_message(
    flags: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(flags)

    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_the_server_logs_one_line_when_ready_with_its_url(server: ServerProcess) -> None:
    # /health can answer 200 a poll interval before the announcer logs: wait for the line.
    deadline = time.monotonic() + 30
    while "ready" not in server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log_path.read_text().splitlines()

    ready = [line for line in log if "ready" in line]
    assert len(ready) == 1
    assert server.url in ready[0]
