"""Per-request LoRA on the tiny Wan model: the same frames as diffusers' WanPipeline with
load_lora_weights, CFG's unconditional rows carrying the adapter as diffusers' do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from diffusers import WanPipeline

from omni.lora.spec import LoraSpec
from tests.engine.helpers import generate_all
from tests.lora.helpers import WAN_TARGETS, make_lora
from tests.models.test_wan_engine import assert_same_video, diffusers_video, video_params


def test_a_lora_video_equals_diffusers_and_a_batch_mixes_it_with_none(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    make_lora(WanPipeline, tiny_wan_dir, tmp_path / "m", seed=5, targets=WAN_TARGETS)
    params = video_params(num_frames=5, width=32, height=32, num_inference_steps=3)
    with_lora = replace(params, lora=(LoraSpec(name="m", scale=0.8),))
    (ours, plain), stats = generate_all(
        tiny_wan_dir, [with_lora, params], lora_modules=(("m", str(tmp_path / "m")),)
    )

    pipe = WanPipeline.from_pretrained(tiny_wan_dir)
    pipe.load_lora_weights(tmp_path / "m", adapter_name="m")
    pipe.set_adapters("m", adapter_weights=0.8)
    assert_same_video(ours.output, diffusers_video(tiny_wan_dir, ours.params, pipe=pipe))
    assert_same_video(plain.output, diffusers_video(tiny_wan_dir, plain.params))
    assert np.abs(ours.output.astype(np.int16) - plain.output).mean() > 1
    assert stats.max_batch_size_seen == 2  # the adapter's request and the plain one shared
