from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, WanImageToVideoPipeline, WanPipeline
from PIL import Image

from omni.models import tiny
from omni.models.tiny import wan as tiny_wan


def _flux_max_sequence_length(pipe: FluxPipeline) -> int:
    return min(512, pipe.tokenizer_2.model_max_length)


def _weight_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(file.relative_to(directory)): file.read_bytes()
        for file in sorted(directory.rglob("*.safetensors"))
    }


def _quiet(pipe: FluxPipeline | WanPipeline | WanImageToVideoPipeline) -> None:
    pipe.set_progress_bar_config(disable=True)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny_flux(tmp_path_factory.mktemp("flux") / "omni-tiny")


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny_wan(tmp_path_factory.mktemp("wan") / "omni-tiny-video")


@pytest.fixture(scope="module")
def flux_pipe(flux_dir: Path) -> FluxPipeline:
    pipe = FluxPipeline.from_pretrained(flux_dir)
    _quiet(pipe)
    return pipe


def test_flux_components_are_consistent(flux_pipe: FluxPipeline) -> None:
    clip_config = flux_pipe.text_encoder.config
    assert clip_config.vocab_size == len(flux_pipe.tokenizer)
    assert clip_config.eos_token_id == flux_pipe.tokenizer.eos_token_id
    assert clip_config.bos_token_id == flux_pipe.tokenizer.bos_token_id
    assert flux_pipe.tokenizer.model_max_length == 77
    assert flux_pipe.text_encoder_2.config.vocab_size == len(flux_pipe.tokenizer_2)
    assert flux_pipe.tokenizer_2.model_max_length == 64
    assert flux_pipe.vae_scale_factor == 8
    assert flux_pipe.scheduler.config.use_dynamic_shifting


def test_flux_tokenizers_round_trip(flux_pipe: FluxPipeline) -> None:
    clip_ids = flux_pipe.tokenizer("a photo of a cat").input_ids
    assert clip_ids[0] == flux_pipe.tokenizer.bos_token_id
    assert clip_ids[-1] == flux_pipe.tokenizer.eos_token_id
    assert flux_pipe.tokenizer.decode(clip_ids, skip_special_tokens=True) == "a photo of a cat"
    t5_ids = flux_pipe.tokenizer_2("a photo of a cat").input_ids
    assert t5_ids[-1] == flux_pipe.tokenizer_2.eos_token_id
    assert flux_pipe.tokenizer_2.unk_token_id not in t5_ids


@pytest.mark.parametrize(("height", "width"), [(64, 64), (32, 64)])
def test_flux_runs(flux_pipe: FluxPipeline, height: int, width: int) -> None:
    images = flux_pipe(
        "a cat",
        height=height,
        width=width,
        num_inference_steps=4,
        guidance_scale=3.5,
        max_sequence_length=_flux_max_sequence_length(flux_pipe),
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (1, height, width, 3)
    assert np.isfinite(images).all()
    assert images.std() > 0.01


def test_flux_latents_are_packed_from_an_8x_vae(flux_pipe: FluxPipeline) -> None:
    latents = flux_pipe(
        "a cat",
        height=64,
        width=64,
        num_inference_steps=1,
        max_sequence_length=_flux_max_sequence_length(flux_pipe),
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).images
    assert latents.shape == (1, 16, 64)
    assert torch.isfinite(latents).all()


def test_wan_runs(wan_dir: Path) -> None:
    pipe = WanPipeline.from_pretrained(wan_dir)
    _quiet(pipe)
    assert pipe.config.boundary_ratio is None
    assert pipe.transformer_2 is None
    frames = pipe(
        "a cat",
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 32, 32, 3)
    assert np.isfinite(frames).all()


def _record_calls(pipe: WanPipeline | WanImageToVideoPipeline) -> list[str]:
    calls: list[str] = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name)
        module.register_forward_hook(lambda *_, name=name: calls.append(name))
    return calls


def test_wan_two_experts_switch_at_boundary(tmp_path: Path) -> None:
    pipe = WanPipeline.from_pretrained(tiny.build_tiny_wan(tmp_path / "wan", two_experts=True))
    _quiet(pipe)
    assert pipe.config.boundary_ratio == tiny_wan.WAN_T2V_BOUNDARY_RATIO
    calls = _record_calls(pipe)
    frames = pipe(
        "a cat",
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 32, 32, 3)
    assert calls == ["transformer", "transformer_2"]


def test_wan_image_to_video_runs(tmp_path: Path) -> None:
    path = tiny.build_tiny_wan(tmp_path / "i2v", image_to_video=True, two_experts=True)
    pipe = WanImageToVideoPipeline.from_pretrained(path)
    _quiet(pipe)
    assert pipe.transformer.config.in_channels == 36
    assert pipe.image_encoder is None
    # diffusers 0.42.1's I2V prompt cleaning needs ftfy, so feed embeddings directly.
    embeds = torch.zeros(1, 16, pipe.transformer.config.text_dim)
    image = Image.fromarray(np.full((32, 32, 3), 128, dtype=np.uint8))
    frames = pipe(
        image,
        prompt_embeds=embeds,
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).frames
    assert frames.shape == (1, 5, 32, 32, 3)
    assert np.isfinite(frames).all()


@pytest.mark.parametrize("builder", [tiny.build_tiny_flux, tiny.build_tiny_wan])
def test_builds_are_deterministic(builder: Callable[..., Path], tmp_path: Path) -> None:
    first = _weight_bytes(builder(tmp_path / "first", seed=0))
    second = _weight_bytes(builder(tmp_path / "second", seed=0))
    other = _weight_bytes(builder(tmp_path / "other", seed=1))
    assert first
    assert first == second
    assert first != other


def test_builder_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    tiny.build_tiny_wan(tmp_path / "wan")
    assert torch.equal(torch.rand(4), expected)


def test_builtin_registry_names() -> None:
    assert tiny.BUILTIN_MODELS["omni-tiny"] is tiny.build_tiny_flux
    assert tiny.BUILTIN_MODELS["omni-tiny-video"] is tiny.build_tiny_wan
    with pytest.raises(KeyError):
        tiny.ensure_builtin("no-such-model")


def _counting_builder(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Path]:
    builds: list[Path] = []
    real_builder = tiny.BUILTIN_MODELS[name]

    def builder(path: Path) -> Path:
        builds.append(path)
        return real_builder(path)

    monkeypatch.setitem(tiny.BUILTIN_MODELS, name, builder)
    return builds


def test_ensure_builtin_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = _counting_builder(monkeypatch, "omni-tiny")
    first = tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path)
    second = tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path)
    assert first == second == tmp_path / "omni-tiny"
    assert len(builds) == 1
    assert tiny.is_complete(first)
    assert (first / "model_index.json").is_file()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["omni-tiny"]


def test_ensure_builtin_uses_env_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tiny.CACHE_ENV_VAR, str(tmp_path))
    assert tiny.ensure_builtin("omni-tiny") == tmp_path / "omni-tiny"


def test_ensure_builtin_replaces_incomplete_dir(tmp_path: Path) -> None:
    stale = tmp_path / "omni-tiny"
    stale.mkdir()
    (stale / "model_index.json").write_text("{}")
    path = tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path)
    assert tiny.is_complete(path)
    assert (path / "transformer").is_dir()
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["omni-tiny"]


def test_ensure_builtin_sweeps_what_killed_builds_left(tmp_path: Path) -> None:
    old_build, old_stale, live_build, other_model = (
        tmp_path / name
        for name in (
            ".omni-tiny.building-killed",
            ".omni-tiny.stale-killed",
            ".omni-tiny.building-live",
            ".omni-tiny-video.building-killed",
        )
    )
    for directory in (old_build, old_stale, live_build, other_model):
        (directory / "transformer").mkdir(parents=True)
    an_hour_and_more_ago = time.time() - tiny.LEFTOVER_AGE_S - 60
    for directory in (old_build, old_stale, other_model):
        os.utime(directory, (an_hour_and_more_ago, an_hour_and_more_ago))

    tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path)  # swept while building
    (old_build / "transformer").mkdir(parents=True)  # killed again, after the model was built
    os.utime(old_build, (an_hour_and_more_ago, an_hour_and_more_ago))
    tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path)  # swept though nothing is built

    left = {entry.name for entry in tmp_path.iterdir()}
    assert left == {live_build.name, other_model.name, "omni-tiny"}


def test_ensure_builtin_concurrent(tmp_path: Path) -> None:
    results: list[Path] = []

    def worker() -> None:
        results.append(tiny.ensure_builtin("omni-tiny", cache_dir=tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "omni-tiny"] * 3
    assert tiny.is_complete(tmp_path / "omni-tiny")
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["omni-tiny"]
