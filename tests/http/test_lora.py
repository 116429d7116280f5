"""The `lora` field over HTTP: registered names and allow-listed paths, refusals that name the
problem (400) while the server keeps serving, edits and videos with an adapter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from diffusers import FluxPipeline, WanPipeline
from safetensors.torch import load_file, save_file

from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.engine.test_flux_edit import source_image
from tests.http.servers import ServerThread, server_thread
from tests.http.test_edits import decode, edit, png
from tests.lora.helpers import WAN_TARGETS, make_lora
from tests.test_media import decode as decode_video

MAX_RANK = 4
ADAPTER = "a/pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lora_root(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lora-dir")
    make_lora(FluxPipeline, tiny_flux_dir, root / "a", seed=1, rank=MAX_RANK)
    make_lora(FluxPipeline, tiny_flux_dir, root / "big", seed=2, rank=2 * MAX_RANK)
    outside = tmp_path_factory.mktemp("outside")
    make_lora(FluxPipeline, tiny_flux_dir, outside, seed=3)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    save_file({"weight": torch.randn(4, 4)}, root / "junk.safetensors")
    prefix = "transformer.transformer_blocks.0.attn.to_q"
    misfit = {
        f"{prefix}.lora_A.weight": torch.randn(2, 7),
        f"{prefix}.lora_B.weight": torch.ones(7, 2),
    }
    save_file(misfit, root / "misfit.safetensors")
    text_layer = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj"
    with_text = load_file(root / ADAPTER) | {
        f"{text_layer}.lora_A.weight": torch.randn(MAX_RANK, 32),
        f"{text_layer}.lora_B.weight": torch.randn(32, MAX_RANK),
    }
    save_file(with_text, root / "text.safetensors")
    return root


@pytest.fixture(scope="module")
def lora_server(tiny_flux_dir: Path, lora_root: Path, tmp_path_factory) -> Iterator[ServerThread]:
    engine = EngineConfig(
        model=str(tiny_flux_dir),
        profile_seconds=0,
        lora_modules=(("style", str(lora_root / "a")),),
        lora_dir=str(lora_root),
        max_lora_rank=MAX_RANK,
    )
    config = ServerConfig(engine=engine, port=0, storage_path=tmp_path_factory.mktemp("storage"))
    with server_thread(config) as server:
        yield server


def generate(url: str, lora: Any = None, **fields: Any) -> requests.Response:
    body = {"prompt": "a fox", "size": "32x32", "num_inference_steps": 2, "seed": 5, **fields}
    if lora is not None:
        body["lora"] = lora
    return requests.post(f"{url}/v1/images/generations", json=body, timeout=120)


def image(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(decode(response.json()["data"][0]["b64_json"]), dtype=np.int16)


def test_a_registered_name_and_its_path_give_one_image_unlike_no_adapter(
    lora_server: ServerThread,
) -> None:
    url = lora_server.url
    named = image(generate(url, {"name": "style"}))
    by_path = image(generate(url, {"name": "any label", "local_path": ADAPTER, "scale": 1.0}))
    listed = image(
        generate(url, [{"name": "style", "scale": 0.5}, {"name": "style", "scale": 0.5}])
    )
    plain = image(generate(url))

    assert np.array_equal(named, by_path)
    assert np.abs(named - listed).max() <= 2  # two halves of one adapter stack into the whole
    assert np.abs(named - plain).mean() > 1


@pytest.mark.parametrize(
    ("lora", "message"),
    [
        ({"local_path": "../outside/pytorch_lora_weights.safetensors"}, "outside"),
        ({"local_path": "escape/pytorch_lora_weights.safetensors"}, "outside"),  # a symlink
        ({"local_path": "/etc/passwd"}, "outside the server's --lora-dir"),
        ({"name": "unknown"}, "lora name 'unknown' is not registered (registered: style)"),
        ({"local_path": "missing.safetensors"}, "does not exist"),
        ({"local_path": "junk.safetensors"}, "is not a LoRA for FluxPipeline's transformer"),
        ({"local_path": "misfit.safetensors"}, "does not fit this model"),
        ({"local_path": "big"}, f"rank {2 * MAX_RANK}"),
        ({"local_path": "text.safetensors"}, "text-encoder weights"),
        ({"scale": 1.0}, "needs a name"),
        ([{"name": "style"}] * 9, "at most 8"),
    ],
    ids=[
        "dotdot",
        "symlink",
        "absolute",
        "unknown",
        "missing",
        "junk",
        "misfit",
        "rank",
        "text-encoder",
        "nameless",
        "too-many",
    ],
)
def test_refusals_are_400_naming_the_problem_and_the_server_keeps_serving(
    lora_server: ServerThread, lora: Any, message: str
) -> None:
    response = generate(lora_server.url, lora)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["param"] == "lora"
    image(generate(lora_server.url, {"name": "style"}))


def test_an_edit_takes_lora_as_json_text(lora_server: ServerThread) -> None:
    files = [("image", ("a.png", png(source_image()), "image/png"))]
    with_lora = edit(lora_server.url, files, lora=json.dumps({"name": "style"}), strength=0.9)
    without = edit(lora_server.url, files, strength=0.9)

    a, b = (image(response) for response in (with_lora, without))
    assert np.abs(a - b).mean() > 1
    refused = edit(lora_server.url, files, lora="{broken")
    assert refused.status_code == 400 and "lora is not valid JSON" in refused.text


def test_a_video_with_a_lora_differs_from_one_without(tiny_wan_dir: Path, tmp_path: Path) -> None:
    make_lora(WanPipeline, tiny_wan_dir, tmp_path / "motion", seed=4, targets=WAN_TARGETS)
    save_file({"weight": torch.randn(4, 4)}, tmp_path / "junk.safetensors")
    engine = EngineConfig(
        model=str(tiny_wan_dir),
        profile_seconds=0,
        lora_modules=(("motion", str(tmp_path / "motion")),),
        lora_dir=str(tmp_path),
    )
    config = ServerConfig(engine=engine, port=0, storage_path=tmp_path / "storage")
    form = {
        "prompt": "a tide",
        "num_frames": "5",
        "size": "32x32",
        "num_inference_steps": "2",
        "seed": "1",
    }
    with server_thread(config) as server:
        sync = f"{server.url}/v1/videos/sync"
        with_lora = requests.post(sync, data={**form, "lora": '{"name": "motion"}'}, timeout=120)
        without = requests.post(sync, data=form, timeout=120)
        junk = '{"local_path": "junk.safetensors"}'
        refused = requests.post(f"{server.url}/v1/videos", data={**form, "lora": junk}, timeout=60)

    assert with_lora.status_code == 200, with_lora.text
    assert without.status_code == 200, without.text
    a, b = (np.stack(decode_video(r.content).frames).astype(np.int16) for r in (with_lora, without))
    assert a.shape == b.shape and np.abs(a - b).mean() > 1
    assert refused.status_code == 400  # at creation: no job that can only fail
    assert "is not a LoRA for WanPipeline's transformer" in refused.json()["error"]["message"]
