"""Bodies built to break a parser get a 4xx in the error envelope, never a 500 (issue 11)."""

from __future__ import annotations

import json
import zlib

import pytest

from tests.http.raw import (
    BOUNDARY,
    MULTIPART,
    assert_enveloped,
    exchange,
    multipart,
    post,
    request_bytes,
    text_part,
)
from tests.http.test_errors import assert_still_serving

VIDEOS, SYNC, IMAGES = "/v1/videos", "/v1/videos/sync", "/v1/images/generations"
HUGE = int("9" * 400)
NUMERIC_FIELDS = [
    "width",
    "height",
    "num_frames",
    "fps",
    "num_inference_steps",
    "seed",
    "guidance_scale",
    "guidance_scale_2",
    "boundary_ratio",
    "flow_shift",
    "true_cfg_scale",
    "seconds",
    "frame_interpolation_exp",
    "frame_interpolation_scale",
]


def json_body(**fields: object) -> bytes:
    return json.dumps({"prompt": "a hostile clip", **fields}).encode()


# Finding 1: integers of any size ---------------------------------------------------------------


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [HUGE, -HUGE], ids=["huge", "minus-huge"])
def test_a_huge_integer_in_a_json_video_field_is_refused(
    video_url: str, field: str, value: int
) -> None:
    response = post(video_url, VIDEOS, json_body(**{field: value}), "application/json")

    assert_enveloped(response)


@pytest.mark.parametrize("field", NUMERIC_FIELDS)
def test_a_huge_integer_in_a_form_video_field_is_refused(video_url: str, field: str) -> None:
    body = multipart(text_part("prompt", "a hostile clip"), text_part(field, str(HUGE)))

    assert_enveloped(post(video_url, SYNC, body, MULTIPART))


@pytest.mark.parametrize("field", ["num_inference_steps", "seed", "n", "guidance_scale"])
def test_a_huge_integer_in_an_image_field_is_refused(video_url: str, field: str) -> None:
    response = post(video_url, IMAGES, json_body(**{field: HUGE}), "application/json")

    assert_enveloped(response, 422)


def test_a_long_fps_times_seconds_is_refused_not_overflowed(video_url: str) -> None:
    response = post(video_url, VIDEOS, json_body(seconds="1e308", fps=120), "application/json")

    assert_enveloped(response)


# Finding 2: the list limit ---------------------------------------------------------------------


def test_a_list_limit_of_thousands_of_digits_is_a_400(video_url: str) -> None:
    response = exchange(video_url, request_bytes("GET", f"{VIDEOS}?limit={'7' * 4301}"))

    assert "limit must be between" in assert_enveloped(response, 400)["message"]


# Finding 3: malformed multipart and form bodies ------------------------------------------------

PROMPT = text_part("prompt", "a clip")
MALFORMED_MULTIPART = {
    "a NUL in a part header": multipart(PROMPT, text_part("fps\x00", "8")),
    "a control byte in a filename": multipart(
        PROMPT,
        b'Content-Disposition: form-data; name="input_reference"; filename="a\x01.png"\r\n'
        b"Content-Type: image/png\r\n\r\npng",
    ),
    "a body cut inside a part header": f"--{BOUNDARY}\r\nContent-Disposition: form-da".encode(),
    "a bogus transfer encoding": multipart(
        PROMPT, text_part("fps", "8", b"Content-Transfer-Encoding: x-bogus")
    ),
    "an unknown charset": multipart(
        PROMPT, text_part("fps", "8", b"Content-Type: text/plain; charset=x-no-such-charset")
    ),
    "a part name that is not UTF-8": multipart(PROMPT, text_part(b"f\xffps", "8")),
    "a part with no name": multipart(PROMPT, b"Content-Disposition: form-data\r\n\r\n8"),
    "a nested multipart": multipart(
        PROMPT,
        b'Content-Disposition: form-data; name="nested"\r\n'
        b"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner--",
    ),
}


@pytest.mark.parametrize("body", MALFORMED_MULTIPART.values(), ids=MALFORMED_MULTIPART.keys())
@pytest.mark.parametrize("path", [VIDEOS, SYNC])
def test_a_malformed_multipart_body_is_a_400(video_url: str, path: str, body: bytes) -> None:
    assert_enveloped(post(video_url, path, body, MULTIPART), 400)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded; charset=x-no-such-charset", b"prompt=a"),
        ("application/x-www-form-urlencoded", b"prompt=\xff\xfe"),
        ("multipart/form-data", multipart(PROMPT)),  # no boundary
    ],
)
def test_a_form_that_cannot_be_decoded_is_a_400(
    video_url: str, content_type: str, body: bytes
) -> None:
    assert_enveloped(post(video_url, VIDEOS, body, content_type), 400)
    assert_still_serving(video_url)


# Finding 4: a Content-Encoding the body does not have ------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("path", [VIDEOS, SYNC, IMAGES])
def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(
    video_url: str, path: str, encoding: str
) -> None:
    response = post(
        video_url, path, json_body(), "application/json", **{"Content-Encoding": encoding}
    )

    assert_enveloped(response, 400)


def test_a_truly_compressed_body_is_read(video_url: str) -> None:
    body = zlib.compress(json_body(size="1024"))  # refused for its size: read, then validated

    response = post(video_url, IMAGES, body, "application/json", **{"Content-Encoding": "deflate"})

    assert "size" in assert_enveloped(response, 422)["message"]


# Finding 7: too many form fields ---------------------------------------------------------------


@pytest.mark.parametrize("form", ["multipart", "urlencoded"])
def test_a_form_with_thousands_of_fields_says_so(video_url: str, form: str) -> None:
    names = [f"field_{i}" for i in range(1001)]
    if form == "multipart":
        body, content_type = multipart(*(text_part(n, "1") for n in names)), MULTIPART
    else:
        body = "&".join(f"{n}=1" for n in names).encode()
        content_type = "application/x-www-form-urlencoded"

    error = assert_enveloped(post(video_url, VIDEOS, body, content_type))

    assert "fields" in error["message"]
    assert "larger than" not in error["message"]


# Finding 9: /v1/images/generations reads only JSON ---------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", MULTIPART, "application/x-www-form-urlencoded"],
)
def test_images_refuse_a_body_that_is_not_json_with_415(video_url: str, content_type: str) -> None:
    response = post(video_url, IMAGES, json_body(), content_type)

    assert assert_enveloped(response, 415)["code"] == "unsupported_media_type"
