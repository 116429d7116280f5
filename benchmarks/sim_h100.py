"""H100 simulator profiles of FLUX.1-dev and Qwen-Image, built from published figures.

    python -m benchmarks.sim_h100        # writes benchmarks/profiles/h100-*.json

No GPU measured these. Each model has one published end-to-end anchor (seconds per image at a
given size and step count, batch 1, bf16, plain PyTorch); the forward's cost at other sizes and
batches is extrapolated with a FLOPs model and an MFU curve:

    ms(rows, T) = launch_ms + rows * FLOPs(T) / (peak * mfu(rows * T)),
    FLOPs(T) = linear_flops_per_token * T + 4 * blocks * T^2 * hidden,
    mfu(N) = mfu_max * N / (N + HALF_TOKENS),

with mfu_max solved so that the anchor is met. Every figure used, and what is assumed, is in the
profile's "sources" and "notes".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from benchmarks.sim_profile import FORMAT, PROFILE_DIR, parse_profile

PEAK_TFLOPS = 989.4  # H100 SXM dense bf16 (benchmarks/engine.py uses the same figure)
LAUNCH_MS = 15.0  # eager PyTorch: kernel launches of one forward (assumed)
HALF_TOKENS = 1024  # tokens in a forward at which MFU is half its maximum (assumed)
SIDES = (512, 768, 1024, 1536)
ROWS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    linear_gflops_per_token: float
    blocks: int
    hidden: int
    text_tokens: int
    anchor_tokens: int
    anchor_forward_ms: float  # one forward of one row at anchor_tokens, from the sources

    def flops(self, tokens: int) -> float:
        attention = 4 * self.blocks * tokens * tokens * self.hidden
        return self.linear_gflops_per_token * 1e9 * tokens + attention

    @property
    def mfu_max(self) -> float:
        achieved = self.flops(self.anchor_tokens) / ((self.anchor_forward_ms - LAUNCH_MS) / 1000)
        mfu = achieved / (PEAK_TFLOPS * 1e12)
        return mfu * (self.anchor_tokens + HALF_TOKENS) / self.anchor_tokens

    def forward_ms(self, rows: int, tokens: int) -> float:
        total = rows * tokens
        mfu = self.mfu_max * total / (total + HALF_TOKENS)
        return LAUNCH_MS + rows * self.flops(tokens) / (PEAK_TFLOPS * 1e12 * mfu) * 1000


# FLUX.1-dev: 12.9 GFLOPs a token in its linear layers (diffusers' benchmark dataset counts
# 59,523 GFLOPs for one 1024x1024 forward of 4096 + 512 tokens), 57 blocks of width 3072.
# Anchor: xDiT, 1 x H100, 28 steps, 1024px: 6.71 s; less ~0.1 s text encoding and ~0.1 s VAE
# decode (SGLang's FLUX.1-dev H200 run) leaves 6.51 s / 28 = 232.5 ms a forward.
FLUX = Model("flux.1-dev", 59523.04 / 4608, 57, 3072, 512, 4096 + 512, (6.71 - 0.2) / 28 * 1000)
# Qwen-Image: 60 dual-stream blocks of width 3072 (MLP 4x): 113.2 M parameters a token a block,
# 13.6 GFLOPs a token. Anchor: LeMiCa, 1 x H800 (the H100's compute), 1664x928, 50 steps, true
# CFG (two forwards a step): ~32.68 s; less ~0.35 s for encoding and decoding: 323 ms a forward
# of 6032 image + ~100 text tokens.
QWEN = Model("qwen-image", 13.58, 60, 3072, 64, 6032 + 100, (32.68 - 0.35) / 100 * 1000)

SOURCES = {
    "flux.1-dev": [
        {
            "figure": "FLUX.1-dev, 28 steps, 1024px, 1 x H100, PyTorch (no compile): 6.71 s"
            " (torch.compile: 4.30 s)",
            "source": "xDiT docs/performance/flux.md, 'Scalability of Flux.1 Dev' table",
            "url": "https://github.com/xdit-project/xDiT/blob/main/docs/performance/flux.md",
        },
        {
            "figure": "FLUX.1-dev 1024x1024 latency on H100: 6.46 s (last column of the table,"
            " read as the uncompressed model; corroborates)",
            "source": "TheStageAI Elastic-FLUX.1-dev model card, latency table",
            "url": "https://huggingface.co/TheStageAI/Elastic-FLUX.1-dev",
        },
        {
            "figure": "FLUX.1-dev 1024x1024, 50 steps, 2 x H200 TP2, BF16: engine e2e 4.316 s,"
            " denoise 4.120 s, text encoding ~98-102 ms typical (=> VAE decode ~0.1 s)",
            "source": "SGLang diffusion PR benchmark.json (flux1-bcg-h200)",
            "url": "https://raw.githubusercontent.com/BBuf/sglang/cd9fb01d765a260a8d37ea876de9f0200f627b92/diffusion-prs/flux1-bcg-h200/benchmark.json",
        },
        {
            "figure": "FluxTransformer2DModel forward at 1024x1024 (4096 + 512 tokens):"
            " 59,523.04 GFLOPs",
            "source": "diffusers benchmarks dataset (huggingface.co/datasets/diffusers/benchmarks)",
            "url": "https://huggingface.co/datasets/diffusers/benchmarks",
        },
    ],
    "qwen-image": [
        {
            "figure": "Qwen-Image, 1664x928, 50 steps, true_cfg_scale 4 (inference_qwenimage.py"
            " defaults), single H800: ~32.68 s without cache",
            "source": "LeMiCa4QwenImage README (fork of UnicomAI/LeMiCa), H800 latency table;"
            " settings from its inference_qwenimage.py",
            "url": "https://github.com/scruffynerf/LeMiCa/blob/e8b72b80de6fd271932e078829af381b74ff3289/LeMiCa4QwenImage/README.md",
        },
        {
            "figure": "Qwen/Qwen-Image 1024x1024: peak VRAM 60.0 GiB, weights 53.7 GiB"
            " (fits one 80 GB H100)",
            "source": "vLLM-Omni text-to-image example, supported models table",
            "url": "https://docs.vllm.ai/projects/vllm-omni/en/latest/user_guide/examples/offline_inference/text_to_image/",
        },
    ],
}
NOTES = {
    "flux.1-dev": (
        "Measured: nothing here; published: one batch-1 end-to-end time at 1024px (xDiT, "
        "corroborated by TheStageAI) and SGLang's text-encoding and decode split. Extrapolated: "
        "every other size and every batch size, from the FLOPs model and an MFU curve "
        f"(launch {LAUNCH_MS} ms, MFU half its maximum at {HALF_TOKENS} tokens a forward: both "
        "assumed; no published FLUX.1-dev batch figure on H100 was found). Encode: ~100 ms a "
        "call that runs the text encoders (SGLang's figure), split 85 ms a call + 15 ms a "
        "prompt (assumed); cache hits cost 0.5 ms (noise, sigmas: assumed). Decode: ~96 ms at "
        "1 MP (SGLang), linear in pixels and outputs (assumed). Response: PNG per megapixel "
        "as measured on this repository's CPU profile, 3 ms HTTP (assumed). diffusers "
        "pipeline overhead: 20 ms a call + 2 ms a step (assumed). capacity 1: forward, encode "
        "and decode share one GPU (streams overlap but the SMs are one)."
    ),
    "qwen-image": (
        "Measured: nothing here; published: one end-to-end time on an H800 (same dense bf16 "
        "compute as an H100 SXM) at 1664x928, 50 steps with true CFG (100 forwards of one row). "
        "Extrapolated: every size and batch, with the same FLOPs/MFU model as FLUX.1-dev (the "
        "solved maximum MFU agrees with FLUX's within 1%). Text tokens: 64 for the short shipped "
        "prompts (Qwen-Image trims the prompt embedding to its length). Encode (Qwen2.5-VL-7B): "
        "40 ms a call + 5 ms a prompt, decode 130 ms a megapixel: assumed, no published split "
        "found. Shipped workloads send no negative prompt, so no true CFG (one row), as in "
        "diffusers' QwenImagePipeline; cfg-mix exercises two rows. omni has no Qwen-Image "
        "adapter: this simulates one that batches like the FLUX adapter (every size in one "
        "forward, padded)."
    ),
}


def build(model: Model, png_per_mp: float) -> dict:
    points = []
    for side in SIDES:
        tokens = (side // 16) ** 2 + model.text_tokens
        points += [[rows, tokens, round(model.forward_ms(rows, tokens), 3)] for rows in ROWS]
    qwen = model is QWEN
    profile = {
        "format": FORMAT,
        "name": f"h100-{model.name}",
        "device": "NVIDIA H100 80GB SXM, bf16 (built from published figures, not measured)",
        "model": model.name,
        "tokens": {"px_per_token": 16, "text_tokens": model.text_tokens, "shared_forward": True},
        "default_size": [1024, 1024],
        "forward": {
            "model": "interpolate",
            "points": points,
            "mixed_size_factor": 1.05,
            "mfu_max": round(model.mfu_max, 4),
            "launch_ms": LAUNCH_MS,
            "half_tokens": HALF_TOKENS,
        },
        "step_overhead_ms": 0.5,
        "encode": {
            "fixed_ms": 0.5,
            "per_request_ms": 0.5,
            "per_text_call_ms": 40.0 if qwen else 85.0,
            "per_prompt_ms": 5.0 if qwen else 15.0,
        },
        "decode": {
            "fixed_ms": 5.0,
            "per_output_ms": 0.0,
            "per_megapixel_ms": 130.0 if qwen else 87.0,
        },
        "response": {"fixed_ms": 3.0, "per_megapixel_ms": round(png_per_mp, 2)},
        "pipeline": {"fixed_ms": 20.0, "per_step_ms": 2.0},
        "capacity": 1.0,
        "response_shares_capacity": False,
        "slowdown": 1.0,
        "sources": SOURCES[model.name],
        "notes": NOTES[model.name],
    }
    parse_profile(profile)
    return profile


def main() -> None:
    cpu = json.loads((PROFILE_DIR / "cpu-omni-tiny.json").read_text())
    png_per_mp = cpu["response"]["per_megapixel_ms"]
    for model in (FLUX, QWEN):
        path = PROFILE_DIR / f"h100-{model.name}.json"
        path.write_text(json.dumps(build(model, png_per_mp), indent=1) + "\n")
        print(f"wrote {path}: mfu_max {model.mfu_max:.3f}")


if __name__ == "__main__":
    main()
