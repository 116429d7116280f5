"""Video requests refused with a clear message: bad fields, bodies, list queries and ids."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.http.videos import assert_error, create, image_file

PNG_1PX = base64.b64encode(image_file(size=(1, 1))).decode("ascii")


REFUSED_FORMS = [
    ({"size": "64x32", "width": "48"}, 400, "disagree"),
    ({"size": "64x"}, 400, "Invalid size format"),
    ({"seconds": "4", "fps": "8", "num_frames": "9"}, 400, "num_frames=9 gives 9"),
    ({"seconds": "soon"}, 400, "seconds must be a positive number"),
    ({"seconds": "-1"}, 400, "seconds must be a positive number"),
    ({"lora": '{"path": "a.safetensors"}'}, 400, "lora must be a JSON object"),
    ({"lora": '{"name": "style"}'}, 400, "serves no LoRA adapters"),
    ({"lora": "{broken"}, 400, "lora is not valid JSON"),
    ({"lora": "[1, 2]"}, 400, "lora must be a JSON object"),
    ({"extra_params": "{broken"}, 400, "extra_params is not valid JSON"),
    ({"extra_params": '"text"'}, 400, "extra_params must be a JSON object"),
    ({"extra_params": '{"magcache": 1, "teacache": 2}'}, 400, "magcache, teacache"),
    ({"extra_params": '{"fps": 8}', "fps": "8"}, 400, "fps is sent both"),
    ({"frame_interpolation_exp": "1"}, 400, "only applies with enable_frame_interpolation"),
    ({"frame_interpolation_model_path": "rife"}, 400, "only applies with enable_frame_interp"),
    (
        {"enable_frame_interpolation": "true", "frame_interpolation_model_path": "rife"},
        400,
        "takes no interpolation model paths",
    ),
    ({"width": "wide"}, 422, "width must be an integer, got 'wide'"),
    ({"guidance_scale": "lots"}, 422, "guidance_scale must be a number"),
    ({"enable_frame_interpolation": "maybe"}, 422, "true or false"),
    ({"motion_bucket": "3"}, 422, "motion_bucket"),
    ({"model": "sora-2"}, 400, "not served here"),
    ({"width": "8192"}, 422, "<= 4096"),
    ({"true_cfg_scale": "4"}, 400, "true_cfg_scale"),
    ({"sampler": "ddim"}, 400, "unknown sampler 'ddim'"),
    ({"cache": "teacache"}, 400, "unknown cache type 'teacache'"),
    ({"cache": '{"type": "fbcache", "threshold": 0}'}, 400, "threshold must be above 0"),
    ({"cache": "{broken"}, 400, "cache is not valid JSON"),
    ({"image_reference": f"data:image/png;base64,{PNG_1PX}"}, 400, "text-to-video"),
    ({"image_reference": "not even an image"}, 400, "text-to-video"),  # refused unread
]


@pytest.mark.parametrize(("fields", "status", "message"), REFUSED_FORMS)
def test_bad_fields_are_refused_with_a_clear_message(
    video_url: str, fields: dict[str, str], status: int, message: str
) -> None:
    response = create(video_url, prompt="a refused clip", **fields)
    assert_error(response, status, message)


def test_a_missing_prompt_is_a_422_in_the_seed_shape(video_url: str) -> None:
    response = create(video_url, width="32")
    assert_error(response, 422)
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_both_reference_images_at_once_are_refused(video_url: str) -> None:
    files = {
        "prompt": (None, "two images"),
        "input_reference": ("ref.png", b"unused", "image/png"),
        "image_reference": (None, f"data:image/png;base64,{PNG_1PX}"),
    }
    response = requests.post(f"{video_url}/v1/videos", files=files, timeout=30)
    assert_error(response, 400, "not both")


def test_a_text_to_video_model_refuses_an_upload_before_decoding_it(video_url: str) -> None:
    files = {
        "prompt": (None, "an image for a text-to-video model"),
        "input_reference": ("ref.png", b"not a PNG: never decoded", "image/png"),
    }
    response = requests.post(f"{video_url}/v1/videos", files=files, timeout=30)
    error = assert_error(response, 400, "text-to-video model: it takes no input image")
    assert error["param"] == "input_reference"


def test_an_unsupported_body_type_is_415(video_url: str) -> None:
    response = requests.post(
        f"{video_url}/v1/videos", data=b"prompt", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be between"),
        ({"limit": "101"}, "limit must be between"),
        ({"limit": "many"}, "limit must be an integer"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"after": "video_" + "0" * 32}, "no video job"),
    ],
)
def test_bad_list_queries_are_400(video_url: str, params: dict[str, str], message: str) -> None:
    response = requests.get(f"{video_url}/v1/videos", params=params, timeout=10)
    assert_error(response, 400, message)


@pytest.mark.parametrize("video_id", ["video_" + "0" * 32, "..%2Fvideos.sqlite3", "video_x"])
def test_unknown_ids_are_404_everywhere(video_url: str, video_id: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        response = requests.request(method, f"{video_url}/v1/videos/{video_id}{suffix}")
        assert_error(response, 404)


def test_an_image_model_refuses_video_jobs(url: str) -> None:
    """`url` is the shared tiny FLUX server of tests/http/conftest.py."""
    response = create(url, prompt="a video from an image model")
    assert assert_error(response, 400, "image model")["code"] == "model_not_video"
