from __future__ import annotations

import pytest
import torch

from benchmarks.archs import build, count_parameters, forward_flops, get_arch
from benchmarks.engine import choose_device


@pytest.mark.parametrize(
    ("name", "billions"),
    [("flux-dev", 11.9), ("wan2.1-1.3b", 1.42)],  # the published checkpoints' sizes
)
def test_full_size_configs_have_the_published_parameter_counts(name, billions):
    model = build(get_arch(name), "meta", torch.bfloat16)  # allocates nothing
    assert count_parameters(model) / 1e9 == pytest.approx(billions, rel=0.01)


def test_flux_flops_count_matmuls_once_per_token_plus_joint_attention():
    arch = get_arch("flux-dev")
    tokens = (1024 // 16) ** 2 + 512
    expected = 2 * 1e9 * tokens + 4 * 57 * tokens**2 * 3072
    assert forward_flops(arch, int(1e9), 1024, 1024, 1) == pytest.approx(expected)


def test_wan_tokens_follow_the_vae_and_patch_strides():
    assert get_arch("wan2.1-1.3b").latent_tokens(832, 480, 33) == 9 * 30 * 52


def test_full_size_architectures_refuse_to_build_on_a_cpu():
    with pytest.raises(SystemExit, match="only on a GPU"):
        choose_device(get_arch("flux-dev"), "cpu")
