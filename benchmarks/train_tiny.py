"""Train the step-caching benchmark's transformer briefly with flow matching, on the CPU.

    python -m benchmarks.train_tiny --out /tmp/omni-cache-bench-trained --minutes 12
    python -m benchmarks.cache --model-dir /tmp/omni-cache-bench-trained

Starts from the model benchmarks/cache.py measures (omni-tiny with its 8-block, 256-wide
transformer, random weights, seed 0) and trains only the transformer, as FLUX is trained
(rectified flow): x_t = (1 - t) x0 + t noise, target v = noise - x0, t drawn logit-normal and
then shifted as FluxPipeline shifts its schedule at this image size, passed as FluxPipeline
passes it (t, which the transformer multiplies by 1000), with the serving default guidance.
The data are synthetic images (benchmarks/synthetic_images.py) encoded with omni-tiny's VAE
and packed as FluxPipeline packs latents; the prompts are encoded once with omni-tiny's text
encoders. The trained transformer is saved over the random one in `--out`, a model directory
omni serves; the loss curve goes to `train_log.json` beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from diffusers import FluxPipeline

from benchmarks.cache import benchmark_model
from benchmarks.synthetic_images import PROMPTS, dataset
from omni.flow import config_shift
from omni.models.flux import MAX_SEQUENCE_LENGTH, FluxBase

LOG_FILE = "train_log.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model directory to create")
    parser.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=20, help="steps of linear lr warm-up")
    parser.add_argument("--size", type=int, default=256, help="image side, pixels")
    parser.add_argument("--images", type=int, default=480, help="synthetic images encoded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


@torch.no_grad()
def encode_data(pipe: FluxPipeline, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Packed, scaled latents of the synthetic images, and the prompts' text conditioning."""
    images, indices = dataset(args.images, args.size, args.seed)
    vae = pipe.vae.config
    latents = []
    for start in range(0, len(images), 16):
        batch = torch.from_numpy(images[start : start + 16])
        encoded = pipe.vae.encode(batch).latent_dist.mode()
        encoded = (encoded - vae.shift_factor) * vae.scaling_factor
        batch_size, channels, height, width = encoded.shape
        latents.append(FluxPipeline._pack_latents(encoded, batch_size, channels, height, width))
    length = min(MAX_SEQUENCE_LENGTH, pipe.tokenizer_2.model_max_length)  # as omni encodes
    embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=list(PROMPTS), prompt_2=None, max_sequence_length=length
    )
    side = args.size // pipe.vae_scale_factor // 2
    return {
        "latents": torch.cat(latents),
        "prompt": torch.from_numpy(indices),
        "embeds": embeds,
        "pooled": pooled,
        "text_ids": text_ids,
        "img_ids": FluxPipeline._prepare_latent_image_ids(1, side, side, "cpu", torch.float32),
    }


def sample_sigmas(count: int, mu: float, generator: torch.Generator) -> torch.Tensor:
    """Logit-normal t in (0, 1), shifted by exp(mu) as the inference schedule is."""
    t = torch.sigmoid(torch.randn(count, generator=generator))
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def loss_on(transformer: torch.nn.Module, data: dict, picks: torch.Tensor, mu: float, generator):
    x0 = data["latents"][picks]
    noise = torch.randn(x0.shape, generator=generator)
    sigma = sample_sigmas(len(picks), mu, generator)
    noisy = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
    prompts = data["prompt"][picks]
    prediction = transformer(
        hidden_states=noisy,
        timestep=sigma,  # FluxPipeline's t / 1000
        guidance=torch.full((len(picks),), FluxBase.default_guidance),
        pooled_projections=data["pooled"][prompts],
        encoder_hidden_states=data["embeds"][prompts],
        txt_ids=data["text_ids"],
        img_ids=data["img_ids"],
        return_dict=False,
    )[0]
    return torch.nn.functional.mse_loss(prediction, noise - x0)


def logged(step: int, seconds: float, losses: list[float]) -> dict:
    """One point of the loss curve: the mean loss of the steps since the last point."""
    point = {"step": step, "seconds": round(seconds, 1), "loss": sum(losses) / len(losses)}
    print(f"step {step:5d}  {seconds:7.1f} s  loss {point['loss']:.4f}", flush=True)
    return point


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    if (args.out / "transformer").exists():
        raise SystemExit(f"{args.out} already holds a model; name a new --out")
    started = time.perf_counter()
    pipe = FluxPipeline.from_pretrained(benchmark_model(args.out), dtype=torch.float32)
    data = encode_data(pipe, args)
    prepared = time.perf_counter() - started
    print(f"data: {len(data['latents'])} latents {tuple(data['latents'].shape[1:])}, "
          f"{len(PROMPTS)} prompts, {prepared:.0f} s", flush=True)  # fmt: skip
    mu = config_shift(pipe.scheduler.config, data["latents"].shape[1])
    transformer = pipe.transformer.train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, args.warmup))
    )
    generator = torch.Generator().manual_seed(args.seed)
    curve, window, step = [], [], 0
    budget_start = time.perf_counter()
    budget_end = budget_start + args.minutes * 60
    while time.perf_counter() < budget_end and step != args.max_steps:
        picks = torch.randint(len(data["latents"]), (args.batch,), generator=generator)
        loss = loss_on(transformer, data, picks, mu, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        step += 1
        window.append(loss.item())
        if step % args.log_every == 0:
            curve.append(logged(step, time.perf_counter() - budget_start, window))
            window = []
    if window:  # the last, partial window
        curve.append(logged(step, time.perf_counter() - budget_start, window))
    transformer.eval().save_pretrained(args.out / "transformer")
    log = {"args": {k: str(v) for k, v in vars(args).items()}, "steps": step, "mu": mu,
           "data_seconds": prepared, "curve": curve}  # fmt: skip
    (args.out / LOG_FILE).write_text(json.dumps(log, indent=1) + "\n")
    return log


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = train(args)
    print(f"{log['steps']} steps; saved to {args.out}")


if __name__ == "__main__":
    main()
