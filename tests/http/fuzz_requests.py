"""Hypothesis strategies for whole HTTP requests to every route: hostile more often than not."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.http.raw import BOUNDARY, multipart, request_bytes, text_part

VIDEO_FIELDS = [
    "prompt", "model", "seconds", "size", "user", "input_reference", "image_reference", "width",
    "height", "num_frames", "fps", "num_inference_steps", "guidance_scale", "guidance_scale_2",
    "boundary_ratio", "flow_shift", "true_cfg_scale", "seed", "negative_prompt",
    "enable_frame_interpolation", "frame_interpolation_exp", "lora", "extra_params",
]  # fmt: skip
IMAGE_FIELDS = [
    "prompt", "model", "n", "size", "response_format", "output_format", "user", "quality",
    "output_compression", "partial_images", "stream", "negative_prompt", "num_inference_steps",
    "guidance_scale", "true_cfg_scale", "seed",
]  # fmt: skip
CONTENT_TYPES = [
    "application/json", "application/json; charset=latin-1", "text/plain", "application/xml",
    f"multipart/form-data; boundary={BOUNDARY}", "multipart/form-data",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=x-nope",
    "application/vnd.api+json", "", "*/*; q=0",
]  # fmt: skip
CONTENT_ENCODINGS = ["gzip", "deflate", "br", "identity", "x-bogus", "gzip, deflate"]
PART_HEADERS = [
    b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: x-bogus",
    b"Content-Transfer-Encoding: quoted-printable", b"Content-Type: text/plain; charset=x-nope",
    b"Content-Type: text/plain; charset=utf-16", b"Content-Encoding: gzip",
    b"Content-Type: multipart/mixed; boundary=inner", b"Content-Type: image/png",
]  # fmt: skip

huge_ints = st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400), 2**64, 10**4000])
long_digits = st.sampled_from(["7" * 4301, "0" * 5000 + "1", "9" * 20])
numbers = st.one_of(st.integers(-5, 40), huge_ints, st.floats(allow_nan=True, allow_infinity=True))
texts = st.text(max_size=40)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
form_values = st.one_of(
    numbers.map(str), texts, st.binary(max_size=40), st.sampled_from(["", "1e999", "nan", "2x2"])
)
header_values = st.text(
    st.characters(min_codepoint=0x09, max_codepoint=0xFF, exclude_characters="\r\n"), max_size=60
)


def small_steps(fields: dict[str, Any]) -> dict[str, Any]:
    """A valid request still runs: keep its work small, or the fuzz would time the model."""
    steps = fields.get("num_inference_steps")
    if isinstance(steps, int) and 2 < steps <= 1000:
        fields["num_inference_steps"] = 1
    return fields


@st.composite
def json_bodies(draw: st.DrawFn, names: list[str]) -> bytes:
    fields = draw(st.dictionaries(st.sampled_from(names) | texts, json_values, max_size=6))
    if draw(st.booleans()):
        fields["prompt"] = draw(texts)
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))  # not JSON at all
    document: Any = small_steps(fields)
    if draw(st.integers(0, 7)) == 0:
        document = [document]
    return json.dumps(document, default=str).encode("utf-8", "surrogatepass")


@st.composite
def multipart_bodies(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(VIDEO_FIELDS) | texts).encode("utf-8", "surrogatepass")
        if draw(st.integers(0, 5)) == 0:
            name = draw(st.binary(max_size=10))
        value = draw(form_values)
        if value in ("1", "2") or (isinstance(value, str) and value.isdigit()):
            value = "1"  # small steps and frames when the field is one of those
        extra = draw(st.lists(st.sampled_from(PART_HEADERS), max_size=2))
        parts.append(text_part(name, value, *extra))
    body = multipart(text_part("prompt", draw(texts)), *parts)
    if draw(st.integers(0, 4)) == 0:  # cut anywhere
        body = body[: draw(st.integers(0, len(body)))]
    return body


@st.composite
def urlencoded_bodies(draw: st.DrawFn) -> bytes:
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(VIDEO_FIELDS) | texts, form_values), max_size=6)
    )
    text = "&".join(f"{quote(k)}={quote(str(v))}" for k, v in pairs)
    return text.encode() if draw(st.booleans()) else draw(st.binary(max_size=80))


@st.composite
def headers(draw: st.DrawFn, content_type: str | None) -> dict[str, str]:
    chosen: dict[str, str] = {}
    if content_type is not None:
        chosen["Content-Type"] = content_type
    if draw(st.integers(0, 5)) == 0:
        chosen["Content-Encoding"] = draw(st.sampled_from(CONTENT_ENCODINGS))
    for name in ("Range", "If-Match", "If-None-Match", "Authorization", "X-Request-Id"):
        if draw(st.integers(0, 6)) == 0:
            chosen[name] = draw(header_values | st.sampled_from(["bytes=0-1", "bytes=-5", "*"]))
    return chosen


@st.composite
def posts(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from(["/v1/videos", "/v1/videos/sync", "/v1/images/generations"]))
    kind = draw(st.sampled_from(["json", "multipart", "urlencoded"]))
    if kind == "json":
        fields = IMAGE_FIELDS if path.endswith("generations") else VIDEO_FIELDS
        body = draw(json_bodies(fields))
        content_type = draw(st.sampled_from(["application/json", None, *CONTENT_TYPES]))
    elif kind == "multipart":
        body = draw(multipart_bodies())
        content_type = draw(st.sampled_from([CONTENT_TYPES[4], *CONTENT_TYPES]))
    else:
        body = draw(urlencoded_bodies())
        content_type = draw(st.sampled_from(CONTENT_TYPES[6:8]))
    return request_bytes("POST", path, body, draw(headers(content_type)))


path_texts = st.text(max_size=30).map(lambda text: quote(text, safe=""))
video_ids = path_texts | st.just("video_" + "0" * 32) | st.just("..%2F..%2Fetc%2Fpasswd")


@st.composite
def reads(draw: st.DrawFn) -> bytes:
    video_id = draw(video_ids)
    path = draw(
        st.sampled_from(
            [
                "/health", "/v1/models", "/v1/stats", "/v1/videos", f"/v1/videos/{video_id}",
                f"/v1/videos/{video_id}/content", "/v1/images/generations", f"/{video_id}",
            ]
        )
    )  # fmt: skip
    params = draw(
        st.dictionaries(
            st.sampled_from(["limit", "order", "after", "variant"]) | texts,
            texts | numbers.map(str) | huge_ints.map(str),
            max_size=3,
        )
    )
    if params:
        path += "?" + "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items()
        )
    method = draw(st.sampled_from(["GET", "GET", "DELETE", "HEAD", "OPTIONS", "PUT", "PATCH"]))
    return request_bytes(method, path, headers=draw(headers(None)))


@st.composite
def raw_lines(draw: st.DrawFn) -> bytes:
    """A request line and headers as arbitrary bytes: what aiohttp refuses before routing."""
    line = draw(st.binary(min_size=1, max_size=120)).replace(b"\r", b"").replace(b"\n", b"")
    return line + b"\r\nHost: fuzz\r\nConnection: close\r\n\r\n"


requests_for_every_route = st.one_of(posts(), posts(), reads(), raw_lines())
