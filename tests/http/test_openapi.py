from __future__ import annotations

import msgspec
import requests

from omni.http.app import build_app
from omni.http.config import ServerConfig
from omni.http.openapi import VideoObject, openapi_document
from omni.video_job import JobStatus, VideoJob


def test_the_document_lists_every_route_the_server_has():
    app = build_app(ServerConfig())
    document = openapi_document(app)
    routes = {
        (r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"
    }
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert documented == routes
    assert all(
        op["summary"] != path for path, ops in document["paths"].items() for op in ops.values()
    )


def test_request_schemas_carry_the_bounds_the_server_enforces():
    schemas = openapi_document(build_app(ServerConfig()))["components"]["schemas"]
    image = schemas["ImageGenerationRequest"]
    steps = next(s for s in image["properties"]["num_inference_steps"]["anyOf"] if "type" in s)
    assert steps["type"] == "integer" and steps["maximum"] >= 1
    assert "priority" in image["properties"] and "prompt" in image["required"]
    assert "num_frames" in schemas["VideoRequest"]["properties"]
    assert set(schemas["ErrorBody"]["required"]) == {"error", "detail"}


def test_the_video_object_schema_is_what_a_job_record_answers():
    for error in (None, "boom"):
        job = VideoJob(
            id="video_" + "0" * 32,
            created_at=1,
            status=JobStatus.FAILED if error else JobStatus.QUEUED,
            progress=0,
            model="m",
            prompt="p",
            seconds="1",
            size="64x64",
            error_code=error,
            error_message=error,
        )
        msgspec.convert(job.to_json(), VideoObject)  # strict: an unknown field fails


def test_the_server_answers_its_document(url):
    answer = requests.get(f"{url}/openapi.json", timeout=30)
    assert answer.status_code == 200
    assert answer.json()["openapi"] == "3.1.0"
