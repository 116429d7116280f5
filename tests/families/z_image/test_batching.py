"""Requests of every kind share forwards, and each comes out as it does alone."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_dispatch import AttentionBackendName

from omni.models.z_image import ZImageAdapter
from omni.request import GenerationParams, Request
from tests.conftest import run
from tests.engine.helpers import assert_same_image, running_engine
from tests.families.z_image.helpers import LONG_PROMPT, z_params

# 40-odd caption tokens: padded to 64 where the others take 32. Sizes are chosen so that the
# forward's padding stays within the scheduler's MAX_PADDING_RATIO (a 512-token caption among
# 32-token ones gets a forward of its own); rows are 64 + 32 or 64 + 64 tokens long.
MEDIUM_PROMPT = (
    "a portrait of a woman in a black coat, soft studio lighting, sharp focus, high detail"
)
SIDE = {"width": 128, "height": 128}

CROWD = [
    z_params(seed=1, **SIDE),
    z_params(prompt="a boat on the calm sea", seed=2, sampler="unipc", **SIDE),
    z_params(prompt="cat", seed=3, num_inference_steps=6, guidance_scale=3.0, **SIDE),
    z_params(
        prompt=MEDIUM_PROMPT,
        seed=4,
        num_inference_steps=3,
        sampler="dpm++2m",
        guidance_scale=1.5,
        **SIDE,
    ),
    z_params(seed=5, width=112, height=96, guidance_scale=2.0, negative_prompt="blurry"),
    z_params(
        prompt="a dog runs across the green park",
        seed=6,
        width=96,
        height=128,
        num_inference_steps=5,
    ),
]


def test_mixed_requests_share_forwards_and_each_matches_its_solo_run(tiny_z_image_dir):
    async def scenario():
        async with running_engine(tiny_z_image_dir) as engine:
            together = await engine.generate_many(CROWD)
            stats = engine.stats()
            alone = [await engine.generate(p) for p in CROWD]
            return together, alone, stats

    together, alone, stats = run(scenario(), timeout=300)
    # Different prompt lengths, sizes, step counts, samplers and CFG settings in one forward.
    assert stats.max_batch_size_seen == len(CROWD)
    assert stats.batch_size_counts[len(CROWD)] == 3  # until the 3-step request finished
    for shared, solo in zip(together, alone, strict=True):
        assert shared.output.size == (shared.params.width, shared.params.height)
        assert_same_image(shared.output, solo.output)


@pytest.fixture(scope="module")
def adapter(tiny_z_image_dir) -> ZImageAdapter:
    return ZImageAdapter("z", tiny_z_image_dir, torch.device("cpu"), torch.float32)


def test_one_forward_over_mixed_rows_equals_each_request_alone(adapter):
    """The guided outputs of one predict over every request (rows of different lengths, so the
    transformer masks padding) equal those of each request on its own, to 1e-5."""
    resolved = [adapter.resolve(p) for p in CROWD]
    assert len({adapter.tokens_per_row(p) for p in resolved}) > 1
    requests = []
    for index, params in enumerate(resolved):
        step_keys, num_rows = adapter.plan(params)
        requests.append(Request(str(index), params, step_keys, num_rows))
    with torch.inference_mode():
        adapter.prepare(requests)
        for request in requests:
            request.step_index = 1  # a step past the first: other timesteps per sampler
        together = adapter.predict(requests)
        alone = [adapter.predict([request])[0] for request in requests]
    for shared, solo, request in zip(together, alone, requests, strict=True):
        assert shared.shape == solo.shape == request.latents.shape
        assert shared.dtype == torch.float32
        torch.testing.assert_close(shared, solo, rtol=0, atol=1e-5)


def test_tokens_per_row_counts_the_rows_real_tokens(adapter):
    """Image tokens and caption tokens, each padded to 32 as the transformer pads them."""
    for prompt, expected_text in (("a red fox", 32), (MEDIUM_PROMPT, 64), (LONG_PROMPT, 512)):
        params = adapter.resolve(GenerationParams(prompt=prompt, width=48, height=32))
        _, lengths = adapter._encode_texts([prompt])
        assert -(-int(lengths[0]) // 32) * 32 == expected_text
        assert adapter.tokens_per_row(params) == 32 + expected_text  # 3x2 patches -> 32


def test_mixed_rows_run_on_a_masked_backend_under_flash_attention(adapter):
    """flash-attn refuses attention masks: a forward over rows of different lengths runs on SDPA
    and the configured backend is back afterwards (here flash is never called: on a CPU it
    would fail)."""
    processors = [m.processor for m in adapter.transformer.modules() if hasattr(m, "processor")]
    params = [adapter.resolve(z_params(prompt=p)) for p in ("a cat", MEDIUM_PROMPT)]
    requests = [Request(str(i), p, *adapter.plan(p)) for i, p in enumerate(params)]
    try:
        for processor in processors:
            processor._attention_backend = AttentionBackendName.FLASH
        with torch.inference_mode():
            adapter.prepare(requests)
            outputs = adapter.predict(requests)
    finally:
        for processor in processors:
            del processor._attention_backend  # the class default again: diffusers' own choice
    assert [o.shape for o in outputs] == [r.latents.shape for r in requests]
