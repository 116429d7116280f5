from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline
from PIL import Image

from omni.errors import InvalidRequestError
from omni.models.wan import WanAdapter
from omni.models.wan_rules import valid_num_frames
from omni.request import GenerationParams, Request

CPU = torch.device("cpu")


def video_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(prompt="a red fox runs through the snow", seed=0)
    return GenerationParams(**{**values, **overrides})


def make_request(adapter: WanAdapter, **overrides: Any) -> Request:
    params = adapter.resolve(video_params(**overrides))
    step_keys, num_rows = adapter.plan(params)
    return Request("r", params, step_keys, num_rows)


def experts_of(request: Request) -> list[int]:
    return [key[-1] for key in request.step_keys]


def still_image() -> Image.Image:
    return Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))


@pytest.mark.parametrize("num_frames", range(-2, 40))
def test_valid_num_frames_is_the_nearest_4k_plus_1_with_ties_rounding_down(num_frames):
    frames = valid_num_frames(num_frames)
    assert frames >= 1 and frames % 4 == 1
    if num_frames >= 1:
        candidates = [n for n in range(1, num_frames + 4) if n % 4 == 1]
        nearest = min(candidates, key=lambda n: (abs(n - num_frames), n))
        assert frames == nearest
    else:
        assert frames == 1


def test_resolve_rounds_num_frames_as_wan_pipeline_does(tiny_wan_dir, t2v):
    pipe = WanPipeline.from_pretrained(tiny_wan_dir)
    pipe.set_progress_bar_config(disable=True)
    for asked in (2, 7, 8):
        params = t2v.resolve(video_params(num_frames=asked))
        video = pipe(
            prompt=params.prompt,
            height=params.height,
            width=params.width,
            num_frames=asked,
            num_inference_steps=1,
            guidance_scale=1.0,
        )
        assert params.num_frames == len(video.frames[0])


def test_resolve_fills_defaults_from_the_model_directory(t2v, tiny_wan_dir):
    import json

    served = json.loads((tiny_wan_dir / "omni.json").read_text())
    params = t2v.resolve(video_params())
    assert (params.width, params.height) == (served["width"], served["height"])
    assert (params.num_frames, params.fps) == (served["num_frames"], served["fps"])
    scheduler_config = json.loads((tiny_wan_dir / "scheduler/scheduler_config.json").read_text())
    assert params.flow_shift == scheduler_config["flow_shift"]
    assert params.guidance_scale_2 is None and params.boundary_ratio is None
    assert t2v.info.kind == "video"
    assert t2v.info.default_num_frames == served["num_frames"]
    assert t2v.info.default_fps == served["fps"]


@pytest.mark.parametrize("flow_shift", [None, 1.0, 5.0, 12.0])
@pytest.mark.parametrize("num_steps", [1, 4, 50])
@pytest.mark.parametrize("sampler", [None, "euler"])
def test_schedule_is_the_shipped_unipc_or_the_chosen_euler_with_the_flow_shift(
    t2v, flow_shift, num_steps, sampler
):
    request = make_request(
        t2v, num_inference_steps=num_steps, flow_shift=flow_shift, sampler=sampler
    )
    with torch.inference_mode():
        t2v.prepare([request])
    if sampler is None:
        assert request.params.sampler == "unipc"  # the class the tiny model's pipeline ships
        scheduler = UniPCMultistepScheduler.from_config(
            t2v.pipe.scheduler.config, flow_shift=request.params.flow_shift
        )
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=request.params.flow_shift)
    scheduler.set_timesteps(num_steps)
    assert torch.equal(request.sigmas, scheduler.sigmas)
    assert torch.equal(request.timesteps, scheduler.timesteps)


@pytest.mark.parametrize("boundary_ratio", [None, 0.0, 0.5, 0.9, 1.0])
def test_experts_switch_at_the_step_wan_pipeline_switches(
    tiny_wan22_dir, t2v_two_experts, boundary_ratio
):
    pipe = WanPipeline.from_pretrained(tiny_wan22_dir)
    pipe.set_progress_bar_config(disable=True)
    called: list[int] = []
    for index, expert in enumerate((pipe.transformer, pipe.transformer_2)):
        expert.register_forward_pre_hook(lambda *_, index=index: called.append(index))
    request = make_request(
        t2v_two_experts, num_inference_steps=8, guidance_scale=1.0, boundary_ratio=boundary_ratio
    )
    pipe.scheduler = UniPCMultistepScheduler.from_config(
        pipe.scheduler.config, flow_shift=request.params.flow_shift
    )
    pipe.register_to_config(boundary_ratio=request.params.boundary_ratio)
    p = request.params
    pipe(prompt=p.prompt, height=p.height, width=p.width, num_frames=1, num_inference_steps=8,
         guidance_scale=1.0, output_type="latent")  # fmt: skip
    assert experts_of(request) == called


def test_cfg_rows_follow_each_experts_guidance(t2v, t2v_two_experts):
    assert make_request(t2v, guidance_scale=4.0).num_rows == 2
    assert make_request(t2v, guidance_scale=1.0).num_rows == 1

    # CFG only on the low-noise expert's steps.
    request = make_request(
        t2v_two_experts, num_inference_steps=8, guidance_scale=1.0, guidance_scale_2=3.0
    )
    assert request.num_rows == 2
    experts = experts_of(request)
    assert set(experts) == {0, 1}
    for step, expert in enumerate(experts):
        request.step_index = step
        assert t2v_two_experts.cfg_scale(request) == (3.0 if expert == 1 else None)

    # guidance_scale_2 defaults to guidance_scale, as in WanPipeline.
    request = make_request(t2v_two_experts, guidance_scale=6.0)
    assert request.params.guidance_scale_2 == 6.0


@pytest.mark.parametrize(
    ("adapter", "overrides", "param", "words"),
    [
        ("t2v", {"true_cfg_scale": 4.0}, "true_cfg_scale", "not supported"),
        ("t2v", {"image": still_image()}, "image", "text-to-video"),
        ("i2v", {}, "image", "image is required"),
        ("t2v", {"num_frames": 0}, "num_frames", "between 1 and"),
        ("t2v", {"num_frames": 100_000}, "num_frames", "between 1 and"),
        ("t2v", {"height": 8192}, "size", "out of range"),
        ("t2v", {"fps": 0}, "fps", "fps must be"),
        ("t2v", {"flow_shift": 0.0}, "flow_shift", "between"),
        ("t2v", {"guidance_scale": -1.0}, "guidance_scale", "between"),
        ("t2v", {"guidance_scale_2": 3.0}, "guidance_scale_2", "two experts"),
        ("t2v", {"boundary_ratio": 0.5}, "boundary_ratio", "two experts"),
        ("t2v_two_experts", {"boundary_ratio": 1.5}, "boundary_ratio", "between 0 and 1"),
    ],
)
def test_bad_requests_are_clear_errors(request, adapter, overrides, param, words):
    adapter = request.getfixturevalue(adapter)
    with pytest.raises(InvalidRequestError) as error:
        adapter.resolve(video_params(**overrides))
    assert error.value.param == param
    assert words in str(error.value)


def test_image_to_video_takes_an_image(i2v):
    params = i2v.resolve(video_params(image=still_image()))
    assert params.boundary_ratio is not None


def test_the_largest_size_and_frame_count_accepted_run_through_the_transformer(t2v):
    info = t2v.info
    request = make_request(
        t2v,
        width=info.max_side,
        height=info.size_multiple,
        num_frames=t2v.max_num_frames,
        num_inference_steps=1,
        guidance_scale=1.0,
    )
    with torch.inference_mode():
        t2v.prepare([request])
        (velocity,) = t2v.predict([request])
    assert velocity.shape == request.latents.shape
    for too_big in ({"width": info.max_side + info.size_multiple}, {"num_frames": 10_000}):
        with pytest.raises(InvalidRequestError):
            t2v.resolve(video_params(**too_big))


@pytest.mark.parametrize(
    ("asked", "made"), [((85, 48), (80, 48)), ((40, 24), (48, 32)), ((8, 7), (16, 16))]
)
def test_video_sides_round_to_the_nearest_size_the_model_makes(t2v, asked, made):
    resolved = t2v.resolve(video_params(width=asked[0], height=asked[1]))
    assert (resolved.width, resolved.height) == made
