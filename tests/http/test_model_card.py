"""GET /v1/models' omni fields: what a client needs to build a form for the served model."""

from __future__ import annotations

import requests


def served_card(url: str) -> dict:
    [card] = requests.get(f"{url}/v1/models", timeout=10).json()["data"]
    return card


def sides(size: str) -> tuple[int, int]:
    width, height = size.split("x")
    return int(width), int(height)


def test_the_card_gives_the_kind_defaults_and_sizes_the_server_uses(url: str) -> None:
    card = served_card(url)
    left_out = requests.post(
        f"{url}/v1/images/generations", json={"prompt": "a cat", "seed": 1}, timeout=60
    )
    suggested = [sides(size) for size in card["sizes"]]

    assert card["object"] == "model" and card["kind"] == "image"
    assert left_out.json()["size"] == card["defaults"]["size"] == card["sizes"][0]
    assert len(suggested) == len(set(suggested)) > 1
    for width, height in suggested:
        assert width % card["size_multiple"] == 0 and height % card["size_multiple"] == 0
        assert max(width, height) <= card["max_side"]
    smallest = min(card["sizes"], key=lambda size: sides(size)[0] * sides(size)[1])
    made = requests.post(
        f"{url}/v1/images/generations",
        json={"prompt": "a cat", "size": smallest, "num_inference_steps": 1},
        timeout=60,
    )
    assert made.status_code == 200 and made.json()["size"] == smallest
    assert card["takes_image"] is False and card["defaults"]["num_frames"] is None


def test_the_video_card_gives_frames_and_fps(video_url: str) -> None:
    card = served_card(video_url)
    job = requests.post(
        f"{video_url}/v1/videos", data={"prompt": "a boat", "num_inference_steps": "1"}, timeout=30
    ).json()
    defaults = card["defaults"]
    frames = defaults["num_frames"]

    assert card["kind"] == "video"
    assert job["size"] == defaults["size"]
    assert float(job["seconds"]) == frames / defaults["fps"]
