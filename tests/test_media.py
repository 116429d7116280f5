from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import av
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from omni.errors import InvalidRequestError
from omni.media import (
    MAX_REFERENCE_SIDE,
    encode_mp4,
    even_frames,
    read_image,
    read_reference_image,
)


@dataclass
class DecodedVideo:
    codec: str
    pix_fmt: str
    fps: float
    width: int
    height: int
    frames: list[np.ndarray]


def decode(data: bytes) -> DecodedVideo:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return DecodedVideo(
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            fps=float(stream.average_rate),
            width=stream.width,
            height=stream.height,
            frames=frames,
        )


def solid_clip(
    num_frames: int, height: int, width: int, colour: tuple[int, int, int]
) -> np.ndarray:
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[...] = colour
    return frames


def test_mp4_is_h264_yuv420p_with_the_requested_frames_fps_and_size() -> None:
    video = decode(encode_mp4(solid_clip(13, 48, 80, (30, 60, 90)), fps=12))
    assert (video.codec, video.pix_fmt) == ("h264", "yuv420p")
    assert video.fps == 12
    assert (video.width, video.height) == (80, 48)
    assert len(video.frames) == 13


@pytest.mark.parametrize("colour", [(200, 40, 90), (10, 220, 130)])
def test_a_solid_colour_survives_encoding(colour: tuple[int, int, int]) -> None:
    video = decode(encode_mp4(solid_clip(5, 32, 32, colour), fps=8))
    for frame in video.frames:
        # yuv420p rounding and limited-range conversion move a channel by a few levels at most.
        assert np.abs(frame.mean(axis=(0, 1)) - colour).max() < 4


def test_frame_order_and_content_survive() -> None:
    levels = [0, 64, 128, 192, 255]
    frames = np.stack([solid_clip(1, 32, 32, (level, level, level))[0] for level in levels])
    video = decode(encode_mp4(frames, fps=5))
    means = [float(frame.mean()) for frame in video.frames]
    assert means == sorted(means)
    assert np.abs(np.array(means) - levels).max() < 4


def test_odd_sizes_are_padded_to_even_by_repeating_the_edge() -> None:
    frames = np.zeros((3, 17, 33, 3), dtype=np.uint8)
    frames[:, -1, :] = 255  # last row white
    frames[:, :, -1] = 128  # last column grey
    padded = even_frames(frames)
    assert padded.shape == (3, 18, 34, 3)
    np.testing.assert_array_equal(padded[:, :17, :33], frames)
    np.testing.assert_array_equal(padded[:, 17, :33], frames[:, 16])
    np.testing.assert_array_equal(padded[:, :17, 33], frames[:, :, 32])
    video = decode(encode_mp4(frames, fps=4))
    assert (video.width, video.height, len(video.frames)) == (34, 18, 3)


def test_even_sizes_are_left_alone() -> None:
    frames = solid_clip(2, 16, 16, (1, 2, 3))
    assert even_frames(frames) is frames


@pytest.mark.parametrize(
    ("frames", "fps"),
    [
        (np.zeros((0, 16, 16, 3), dtype=np.uint8), 8),
        (np.zeros((2, 16, 16, 3), dtype=np.float32), 8),
        (np.zeros((2, 16, 16), dtype=np.uint8), 8),
        (np.zeros((2, 16, 16, 3), dtype=np.uint8), 0),
    ],
)
def test_bad_input_is_refused(frames: np.ndarray, fps: int) -> None:
    with pytest.raises(ValueError):
        encode_mp4(frames, fps)


def image_bytes(image_format: str, colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), colour).save(buffer, format=image_format)
    return buffer.getvalue()


PNG_BASE64 = base64.b64encode(image_bytes("PNG")).decode("ascii")
DATA_URL = f"data:image/png;base64,{PNG_BASE64}"


@pytest.mark.parametrize(
    "reference",
    [
        DATA_URL,
        PNG_BASE64,
        PNG_BASE64[:20] + "\n" + PNG_BASE64[20:],  # wrapped base64
        json.dumps(DATA_URL),
        json.dumps({"image_url": DATA_URL}),
        {"image_url": {"url": DATA_URL}},
        {"b64_json": PNG_BASE64},
    ],
)
def test_reference_images_arrive_in_every_accepted_form(reference: object) -> None:
    image = read_reference_image(reference, "image_reference")
    assert (image.mode, image.size) == ("RGB", (6, 4))
    assert image.getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"file_id": "file_1"}, "file_id is not supported"),
        ({"nothing": "here"}, "must hold one of"),
        ("https://example.com/a.png", "does not download"),
        ("data:image/png,rawbytes", "only base64 data URLs"),
        ("not base64 at all!", "neither a data URL nor base64"),
        ('{"image_url": ', "not valid JSON"),
        ('{"a": ' * 2000 + "1" + "}" * 2000, "nests too deeply"),
        ("[1, 2]", "neither a data URL nor base64"),
        (base64.b64encode(b"plain text").decode(), "could not be read as an image"),
        (base64.b64encode(image_bytes("GIF")).decode(), "must be a PNG, JPEG or WebP"),
    ],
)
def test_bad_reference_images_are_invalid_requests(reference: object, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as raised:
        read_reference_image(reference, "image_reference")
    assert raised.value.param == "image_reference"


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_uploads_are_read_as_rgb(image_format: str) -> None:
    image = read_image(image_bytes(image_format), "input_reference")
    assert (image.mode, image.size) == ("RGB", (6, 4))


def test_an_image_over_the_pixel_cap_is_refused_before_its_pixels_are_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-bit PNG is a small file however many pixels it holds: decoding is what costs."""
    buffer = io.BytesIO()
    Image.new("1", (MAX_REFERENCE_SIDE + 1, MAX_REFERENCE_SIDE)).save(buffer, format="PNG")

    def no_decoding(image: Image.Image) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    with pytest.raises(InvalidRequestError, match=f"{MAX_REFERENCE_SIDE + 1}x") as raised:
        read_image(buffer.getvalue(), "input_reference")
    assert raised.value.param == "input_reference"
