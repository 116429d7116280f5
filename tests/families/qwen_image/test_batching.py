"""Rows of different text lengths, CFG or not, at any step, share one forward and each gets
what it gets alone; the engine batches requests with different prompts, steps and samplers."""

from __future__ import annotations

import torch

from omni.models.qwen_image import QwenImageAdapter, rescale_to_norms
from omni.request import GenerationParams, Request
from tests.engine.helpers import assert_same_image, generate_all
from tests.families.qwen_image.helpers import LONG_PROMPT, qwen_params

TOLERANCE = 1e-5


def prepared(adapter: QwenImageAdapter, params: GenerationParams, step: int = 0) -> Request:
    params = adapter.resolve(params)
    keys, rows = adapter.plan(params)
    request = Request(f"r{params.seed}", params, keys, num_rows=rows)
    with torch.inference_mode():
        adapter.prepare([request])
    request.step_index = step
    return request


MIXED = [
    qwen_params(prompt="a cat", seed=1),
    qwen_params(prompt="a dog with a blue collar runs across the green park", seed=2),
    qwen_params(prompt=LONG_PROMPT, negative_prompt="blurry", true_cfg_scale=5.0, seed=3),
    qwen_params(
        prompt="a boat sails on the calm sea", negative_prompt=" ", seed=4, num_inference_steps=6
    ),
]


def test_mixed_text_lengths_in_one_forward_equal_each_row_alone(qwen):
    requests = [prepared(qwen, p, step) for p, step in zip(MIXED, (0, 1, 2, 3), strict=True)]
    lengths = {r.cond.prompt_embeds.shape[1] for r in requests}
    assert len(lengths) == 4  # four text lengths padded into one forward
    assert max(lengths) == 512  # the long prompt keeps the pipeline's max_sequence_length
    rows = qwen.rows(requests)
    assert len(rows) == 6  # two requests with CFG
    with torch.inference_mode():
        together = qwen.predict(requests)
        alone = [qwen.predict([r])[0] for r in requests]
    for batched, single in zip(together, alone, strict=True):
        torch.testing.assert_close(batched, single, rtol=0, atol=TOLERANCE)


def test_tokens_per_row_counts_image_patches_and_the_kept_text(qwen):
    for params in MIXED:
        request = prepared(qwen, params)
        text = request.cond.prompt_embeds.shape[1]
        if request.cond.negative_embeds is not None:
            text = max(text, request.cond.negative_embeds.shape[1])
        assert qwen.tokens_per_row(request.params) == 16 + text  # 64x64 -> 4x4 patches


def test_combine_is_the_pipelines_norm_preserving_cfg(qwen):
    generator = torch.Generator().manual_seed(0)
    cond = [torch.randn(1, n, 64, generator=generator) for n in (16, 16, 8)]
    uncond = [torch.randn(1, n, 64, generator=generator) for n in (16, 16, 8)]
    mixed = [u + s * (c - u) for c, u, s in zip(cond, uncond, (4.0, 2.5, 7.0), strict=True)]
    got = rescale_to_norms(mixed, cond)
    for c, m, g in zip(cond, mixed, got, strict=True):
        expected = m * (torch.norm(c, dim=-1, keepdim=True) / torch.norm(m, dim=-1, keepdim=True))
        torch.testing.assert_close(g, expected, rtol=0, atol=0)


def test_requests_with_different_prompts_steps_and_samplers_share_forwards(tiny_qwen_image_dir):
    # Text lengths 14 to 18 (within the scheduler's padding ratio), two with CFG.
    crowd = [
        qwen_params(prompt="a dog runs in the green park", seed=1, sampler="euler"),
        qwen_params(prompt="two children paint a picture", negative_prompt="blurry", seed=2,
                    sampler="unipc"),
        qwen_params(prompt="a red car on a quiet street", seed=3, num_inference_steps=3,
                    sampler="dpm++2m"),
        qwen_params(prompt="a small orange cat sleeps on a table", negative_prompt=" ", seed=4,
                    num_inference_steps=2),
    ]  # fmt: skip
    results, stats = generate_all(tiny_qwen_image_dir, crowd)
    # Steps 1-2 run all four, step 3 three of them, step 4 two: one forward each.
    assert stats.batch_size_counts == {4: 2, 3: 1, 2: 1}
    for result, params in zip(results, crowd, strict=True):
        (alone,), _ = generate_all(tiny_qwen_image_dir, [params])
        assert_same_image(result.output, alone.output)


def test_other_latent_sizes_run_in_forwards_of_their_own(tiny_qwen_image_dir, qwen):
    square, tall = qwen_params(seed=1), qwen_params(seed=2, width=32)
    assert qwen.plan(qwen.resolve(square))[0] != qwen.plan(qwen.resolve(tall))[0]
    results, stats = generate_all(tiny_qwen_image_dir, [square, tall])
    assert [r.output.size for r in results] == [(64, 64), (32, 64)]
    assert stats.max_batch_size_seen == 1
