from __future__ import annotations

from functools import cache

import pytest
import torch

from benchmarks.archs import (
    ARCH_NAMES,
    FULL_SIZE,
    build,
    count_parameters,
    counted_flops,
    forward_flops,
    get_arch,
    make_inputs,
    shrink,
)
from benchmarks.engine import DEFAULT_SIZES, choose_device

# The published checkpoints' transformer sizes, in billions (Wan2.2 A14B: one of two experts).
PUBLISHED_BILLIONS = {
    "flux-dev": 11.9,
    "wan2.1-1.3b": 1.42,
    "wan2.2-a14b": 14.3,
    "qwen-image": 20.4,
    "z-image": 6.15,
    "sd3.5-large": 8.1,
}
# One full-size arch per family, for the shrunk runs.
FAMILY_ARCHS = ("flux-dev", "wan2.2-a14b", "qwen-image", "z-image", "sd3.5-large")


@cache
def meta_model(name: str) -> torch.nn.Module:
    return build(get_arch(name), "meta", torch.bfloat16)  # allocates nothing


def noise_of(inputs: dict) -> torch.Tensor:
    """The noisy latents a forward denoises (Z-Image takes them as a list of samples)."""
    if "x" in inputs:
        return torch.stack(inputs["x"])
    return inputs["hidden_states"]


def output_of(result: tuple) -> torch.Tensor:
    output = result[0]
    return torch.stack(output) if isinstance(output, list) else output


def test_every_full_size_arch_is_listed_with_a_published_size():
    assert set(FULL_SIZE) == set(PUBLISHED_BILLIONS)
    assert set(FULL_SIZE) <= set(ARCH_NAMES)
    assert set(FULL_SIZE) == set(DEFAULT_SIZES)  # the engine benchmark knows a size for each


@pytest.mark.parametrize(("name", "billions"), PUBLISHED_BILLIONS.items())
def test_full_size_configs_have_the_published_parameter_counts(name, billions):
    num_params = count_parameters(meta_model(name))
    print(f"{name}: {num_params:,} parameters")
    assert num_params / 1e9 == pytest.approx(billions, rel=0.05)


@pytest.mark.parametrize("name", PUBLISHED_BILLIONS)
def test_full_size_inputs_run_through_the_full_size_model_on_the_meta_device(name):
    """Shapes only: proves make_inputs fits the real model, and bounds the FLOPs convention."""
    arch = get_arch(name)
    width, height, frames = 256, 192, 5
    inputs = make_inputs(arch, 2, width, height, frames, "meta", torch.bfloat16)
    with torch.inference_mode():
        output = output_of(meta_model(name)(**inputs))
    assert output.shape == noise_of(inputs).shape
    counted = counted_flops(arch, width, height, frames, meta_model(name))
    estimate = forward_flops(arch, count_parameters(meta_model(name)), width, height, frames)
    # 2 * params * tokens overcounts dual-stream blocks, but by under 3x
    assert 0.95 * counted < estimate < 3 * counted


@pytest.mark.parametrize("name", FAMILY_ARCHS)
def test_a_shrunk_copy_of_each_family_runs_a_batch_of_two_on_a_cpu(name):
    full = get_arch(name)
    arch = shrink(full)
    assert arch.family == full.family and set(arch.config) == set(full.config)
    model = build(arch, "cpu", torch.float32)
    assert count_parameters(model) < 2e6
    inputs = make_inputs(arch, 2, 64, 48, 5, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        output = output_of(model(**inputs))
    assert output.shape == noise_of(inputs).shape
    assert output.dtype == torch.float32 and torch.isfinite(output).all()


@pytest.mark.parametrize("name", FAMILY_ARCHS)
def test_forward_flops_grow_with_the_image_size(name):
    arch = get_arch(name)
    num_params = count_parameters(meta_model(name))
    small, large = (forward_flops(arch, num_params, side, side, 5) for side in (512, 1024))
    assert 0 < 2 * small < large  # 4x the image tokens; the text tokens stay as they were


def test_flux_flops_count_matmuls_once_per_token_plus_joint_attention():
    arch = get_arch("flux-dev")
    tokens = (1024 // 16) ** 2 + 512
    expected = 2 * 1e9 * tokens + 4 * 57 * tokens**2 * 3072
    assert forward_flops(arch, int(1e9), 1024, 1024, 1) == pytest.approx(expected)


def test_joint_attention_families_count_their_text_tokens():
    tokens = (1024 // 16) ** 2
    qwen = get_arch("qwen-image")
    expected = 2 * 1e9 * (tokens + 128) + 4 * 60 * (tokens + 128) ** 2 * 3072
    assert forward_flops(qwen, int(1e9), 1024, 1024, 1) == pytest.approx(expected)
    sd3 = get_arch("sd3.5-large")
    expected = 2 * 1e9 * (tokens + 333) + 4 * 38 * (tokens + 333) ** 2 * 2432
    assert forward_flops(sd3, int(1e9), 1024, 1024, 1) == pytest.approx(expected)


def test_text_lengths_follow_the_pipelines():
    lengths = {name: get_arch(name).text_len for name in PUBLISHED_BILLIONS}
    assert lengths == {
        "flux-dev": 512,
        "wan2.1-1.3b": 512,
        "wan2.2-a14b": 512,
        "qwen-image": 128,
        "z-image": 128,
        "sd3.5-large": 333,
    }


def test_wan_tokens_follow_the_vae_and_patch_strides():
    assert get_arch("wan2.1-1.3b").latent_tokens(832, 480, 33) == 9 * 30 * 52
    assert get_arch("wan2.2-a14b").latent_tokens(1280, 720, 81) == 21 * 45 * 80


def test_z_image_pads_image_tokens_to_a_multiple_of_32():
    assert get_arch("z-image").latent_tokens(1024, 1024) == 64 * 64
    assert get_arch("z-image").latent_tokens(80, 48) == 32  # 3 x 5 tokens, padded


def test_wan22_random_model_has_two_full_size_experts_and_the_shipped_boundary():
    from benchmarks.random_model import random_pipeline

    pipeline = random_pipeline(get_arch("wan2.2-a14b"), "meta", torch.bfloat16)
    assert pipeline.config.boundary_ratio == 0.875  # written to model_index.json
    for expert in (pipeline.transformer, pipeline.transformer_2):
        assert expert.device.type == "meta"
        assert count_parameters(expert) / 1e9 == pytest.approx(14.3, rel=0.01)
    assert pipeline.transformer is not pipeline.transformer_2


def test_full_size_architectures_refuse_to_build_on_a_cpu():
    with pytest.raises(SystemExit, match="only on a GPU"):
        choose_device(get_arch("flux-dev"), "cpu")


@pytest.mark.parametrize("name", ["sd3.5-large", "qwen-image", "z-image"])
def test_random_family_models_are_served_by_omni(tmp_path, name):
    """A shrunk arch's random model, written as `benchmarks.random_model` writes full-size ones,
    loads through the family's adapter and makes an image of the requested size."""
    from benchmarks.random_model import write_random_model
    from omni.request import GenerationParams
    from tests.engine.helpers import generate_all

    model_dir = write_random_model(shrink(get_arch(name)), tmp_path / name, "cpu", torch.float32)
    params = GenerationParams(prompt="a lighthouse", width=32, height=48, num_inference_steps=2)
    (result,), _ = generate_all(model_dir, [params])
    assert result.output.size == (32, 48)


@pytest.mark.parametrize("name", ["sd3.5-large", "qwen-image", "z-image"])
def test_random_family_models_keep_the_published_text_widths(name):
    from benchmarks.random_model import random_pipeline

    arch = get_arch(name)
    pipeline = random_pipeline(arch, "meta", torch.bfloat16)
    assert pipeline.transformer.device.type == "meta"
    widths = {
        "sd3.5-large": lambda p: (
            p.text_encoder.config.hidden_size + p.text_encoder_2.config.hidden_size,
            p.text_encoder_3.config.d_model,
        ),
        "qwen-image": lambda p: p.text_encoder.config.text_config.hidden_size,
        "z-image": lambda p: p.text_encoder.config.hidden_size,
    }
    published = {"sd3.5-large": (2048, 4096), "qwen-image": 3584, "z-image": 2560}
    assert widths[name](pipeline) == published[name]
