"""RIFE frame interpolation on /v1/videos and /v1/videos/sync, a real server with tiny Wan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.errors import InvalidRequestError
from omni.http.config import ServerConfig
from omni.http.state import INTERPOLATOR
from omni.http.video_job_input import decode_input, encode_input
from omni.request import FrameInterpolation, GenerationParams
from tests.http.servers import ServerThread, server_thread, video_config
from tests.http.videos import assert_error, assert_mp4, wait_for_job
from tests.interpolation.checkpoints import released_state, write_checkpoint
from tests.test_media import decode

FRAMES, FPS, SIDE = 5, 4, 32  # Wan makes 4k + 1 frames: 5 stays 5
CLIP = {
    "prompt": "a lantern swinging",
    "size": f"{SIDE}x{SIDE}",
    "num_frames": FRAMES,
    "fps": FPS,
    "num_inference_steps": 1,
    "seed": 4,
}


@pytest.fixture(scope="module")
def rife_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An allow-list root with one RIFE 4.22.lite checkpoint, and one checkpoint beside it."""
    base = tmp_path_factory.mktemp("rife")
    write_checkpoint(base / "models" / "rife-lite", released_state(seed=1))
    write_checkpoint(base / "elsewhere", released_state(seed=2))
    return base / "models"


@pytest.fixture(scope="module")
def server(
    tiny_wan_dir: Path, rife_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    config = video_config(tiny_wan_dir, tmp_path_factory.mktemp("video-storage"))
    fields = {name: getattr(config, name) for name in ServerConfig.__dataclass_fields__}
    with server_thread(ServerConfig(**fields | {"frame_interpolation_dir": rife_root})) as running:
        yield running


def form(**fields: Any) -> dict[str, tuple[None, str]]:
    return {name: (None, str(value)) for name, value in ({**CLIP, **fields}).items()}


def sync(url: str, **fields: Any) -> requests.Response:
    return requests.post(f"{url}/v1/videos/sync", files=form(**fields), timeout=120)


@pytest.mark.parametrize("exp", [1, 2])
def test_sync_video_has_the_interpolated_frames_at_the_multiplied_fps(
    server: ServerThread, exp: int
) -> None:
    response = sync(server.url, enable_frame_interpolation="true", frame_interpolation_exp=exp)

    assert response.status_code == 200, response.text
    video = decode(response.content)
    assert_mp4(video, (FRAMES - 1) * 2**exp + 1, FPS * 2**exp, SIDE, SIDE)


def test_a_job_records_and_serves_the_interpolated_video_made_off_the_engine_thread(
    server: ServerThread,
) -> None:
    fields = {"enable_frame_interpolation": "true", "frame_interpolation_exp": "2"}
    response = requests.post(f"{server.url}/v1/videos", files=form(**fields), timeout=30)
    assert response.status_code == 200, response.text

    job = wait_for_job(server.url, response.json()["id"])
    frames, fps = (FRAMES - 1) * 4 + 1, FPS * 4
    assert job["status"] == "completed", job
    assert float(job["seconds"]) == pytest.approx(frames / fps)
    content = requests.get(f"{server.url}/v1/videos/{job['id']}/content", timeout=30)
    assert_mp4(decode(content.content), frames, fps, SIDE, SIDE)
    record = server.server.app[INTERPOLATOR].records[-1]
    assert (record.frames_in, record.frames_out) == (FRAMES, frames)
    engine_thread = server.server.engine._engine._thread  # the denoise loop's thread
    assert record.thread != engine_thread.name
    assert engine_thread.is_alive()


def test_json_body_with_a_model_inside_the_root_and_a_scale(
    server: ServerThread, rife_root: Path
) -> None:
    body = CLIP | {
        "enable_frame_interpolation": True,
        "frame_interpolation_model_path": "rife-lite",
        "frame_interpolation_scale": 0.5,
    }
    response = requests.post(f"{server.url}/v1/videos/sync", json=body, timeout=120)

    assert response.status_code == 200, response.text
    assert_mp4(decode(response.content), (FRAMES - 1) * 2 + 1, FPS * 2, SIDE, SIDE)
    record = server.server.app[INTERPOLATOR].records[-1]
    assert record.model == str((rife_root / "rife-lite").resolve())


REFUSED = [
    ({"frame_interpolation_exp": "0"}, "frame_interpolation_exp", "between 1 and 4"),
    ({"frame_interpolation_exp": "5"}, "frame_interpolation_exp", "between 1 and 4"),
    ({"frame_interpolation_scale": "0.1"}, "frame_interpolation_scale", "between 0.25 and 4"),
    ({"frame_interpolation_scale": "8"}, "frame_interpolation_scale", "between 0.25 and 4"),
    (
        {"frame_interpolation_model_path": "../elsewhere"},
        "frame_interpolation_model_path",
        "outside",
    ),
    (
        {"frame_interpolation_model_path": "missing"},
        "frame_interpolation_model_path",
        "flownet.pkl",
    ),
]


@pytest.mark.parametrize(("fields", "param", "message"), REFUSED)
@pytest.mark.parametrize("route", ["/v1/videos", "/v1/videos/sync"])
def test_bad_interpolation_fields_are_400s_naming_the_field(
    server: ServerThread, route: str, fields: dict[str, str], param: str, message: str
) -> None:
    body = form(enable_frame_interpolation="true", **fields)
    response = requests.post(f"{server.url}{route}", files=body, timeout=30)

    error = assert_error(response, 400, message)
    assert error["param"] == param


def test_an_absolute_path_outside_the_root_is_refused(
    server: ServerThread, rife_root: Path
) -> None:
    outside = rife_root.parent / "elsewhere"
    response = sync(
        server.url, enable_frame_interpolation="true", frame_interpolation_model_path=outside
    )

    assert assert_error(response, 400, "outside")["param"] == "frame_interpolation_model_path"


def test_settings_without_enabling_are_refused_not_ignored(server: ServerThread) -> None:
    response = sync(server.url, frame_interpolation_exp="2")

    assert assert_error(response, 400, "enable_frame_interpolation=true")["param"] == (
        "frame_interpolation_exp"
    )


def test_the_server_keeps_serving_after_the_refusals(server: ServerThread) -> None:
    response = sync(server.url, enable_frame_interpolation="true")

    assert response.status_code == 200, response.text
    assert len(decode(response.content).frames) == (FRAMES - 1) * 2 + 1


def test_without_an_allow_list_only_the_builtin_model_is_taken(video_url: str) -> None:
    refused = sync(
        video_url, enable_frame_interpolation="true", frame_interpolation_model_path="/tmp"
    )
    error = assert_error(refused, 400, "--frame-interpolation-dir")
    assert error["param"] == "frame_interpolation_model_path"
    body = json.dumps(CLIP | {"enable_frame_interpolation": True})
    made = requests.post(
        f"{video_url}/v1/videos/sync",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert made.status_code == 200, made.text


def test_interpolated_frames_count_against_max_output_pixels() -> None:
    engine = AsyncEngine(EngineConfig(max_output_pixels=SIDE * SIDE * FRAMES))
    made = GenerationParams(prompt="p", width=SIDE, height=SIDE, num_frames=FRAMES, fps=FPS)
    engine._check_output_pixels(made)  # the frames the model makes fit

    doubled = replace(made, frame_interpolation=FrameInterpolation(model="m", exp=1))
    with pytest.raises(InvalidRequestError) as caught:
        engine._check_output_pixels(doubled)
    assert caught.value.param == "frame_interpolation_exp"


def test_a_queued_job_keeps_its_interpolation_across_a_restart() -> None:
    spec = FrameInterpolation(model="/models/rife", exp=3, scale=0.5)
    params = GenerationParams(prompt="p", num_frames=FRAMES, fps=FPS, frame_interpolation=spec)

    assert decode_input(encode_input(params)) == params
