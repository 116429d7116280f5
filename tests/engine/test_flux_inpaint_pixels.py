"""FLUX inpainting keeps the pixels outside the mask: checked with a VAE that round-trips images.

The tiny model's random VAE does not reproduce its input (up to ~180 levels off), so its
pixels cannot show what inpainting keeps. Here the tiny FLUX directory gets another
AutoencoderKL of the same latent layout (16 channels, 8x downsampling), whose weights are set
by hand so that it encodes each 8x8 cell's mean colour into latent channels 0-2 and decodes
by nearest-neighbour upsampling: an image made of 8x8 cells of one colour round-trips to
within a level. (Training such a VAE on CPU did not work in a minute: the GroupNorm before
each conv_out removes a flat image's colour, and a few hundred Adam steps stayed near the
mean-colour loss.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from omni.models.tiny import build_tiny_flux
from tests.engine.helpers import generate_all, image_params, pixels
from tests.engine.test_flux_edit import repaint_mask

WIDTH = 8  # channels of every VAE block; one GroupNorm group over all of them
BIG = 1000.0  # the constant channels that fix each GroupNorm's statistics
OFFSET = 20.0  # keeps the colour channels where SiLU is the identity (error ~e^-20)
MARGIN = 0  # pixels left out beside the mask: none, the decoder works cell by cell
MAX_KEPT_DIFF, MEAN_KEPT_DIFF = 2, 0.5  # levels, outside the mask and its margin


def _centre(conv: torch.nn.Conv2d, pairs: list[tuple[int, int, float]]) -> None:
    """Zero a 3x3 conv, then route in-channel -> out-channel through its centre tap."""
    conv.weight.zero_()
    conv.bias.zero_()
    for out, inp, weight in pairs:
        conv.weight[out, inp, 1, 1] = weight


def _spread(conv: torch.nn.Conv2d) -> None:
    """conv_in: colour c to channels c and c+3 (negated), two constant channels +-BIG, so
    every pixel's channel sum is 0 and GroupNorm's mean and variance hardly depend on it."""
    _centre(conv, [(c, c, 1.0) for c in range(3)] + [(c + 3, c, -1.0) for c in range(3)])
    conv.bias[6], conv.bias[7] = BIG, -BIG


def _norm_out(norm: torch.nn.GroupNorm) -> None:
    """Undo the normalisation (its std is BIG/2 up to ~1e-6) and lift the colours by OFFSET."""
    norm.weight.fill_(BIG / 2)
    norm.bias.zero_()
    norm.bias[:3] = OFFSET


def _identity_blocks(module: torch.nn.Module) -> None:
    """Every ResNet block adds conv2(...): zero conv2 and the block passes its input on."""
    for name, child in module.named_modules():
        if name.endswith("conv2"):
            child.weight.zero_()
            child.bias.zero_()


@torch.no_grad()
def cell_mean_vae() -> AutoencoderKL:
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(WIDTH,) * 4,
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=1,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,
    )
    encoder, decoder = vae.encoder, vae.decoder
    _identity_blocks(vae)
    _spread(encoder.conv_in)
    for block in encoder.down_blocks:
        for down in block.downsamplers or []:
            # Stride 2 over the 2x2 cell at the kernel's top-left (diffusers pads right and
            # bottom): three of them average 8x8 cells.
            down.conv.weight.zero_()
            down.conv.bias.zero_()
            for c in range(WIDTH):
                down.conv.weight[c, c, :2, :2] = 0.25
    _norm_out(encoder.conv_norm_out)
    # Mean: colour channels 0-2 minus OFFSET; log-variance at its floor (-30), so sampling
    # the posterior adds ~3e-7 and the engine's sampled latents are the mean.
    _centre(encoder.conv_out, [(c, c, 1.0) for c in range(3)])
    encoder.conv_out.bias[:3] = -OFFSET
    encoder.conv_out.bias[16:] = -30.0
    _spread(decoder.conv_in)
    for block in decoder.up_blocks:
        for up in block.upsamplers or []:
            _centre(up.conv, [(c, c, 1.0) for c in range(WIDTH)])
    _norm_out(decoder.conv_norm_out)
    _centre(decoder.conv_out, [(c, c, 1.0) for c in range(3)])
    decoder.conv_out.bias[:3] = -OFFSET
    return vae.eval()


def cell_image() -> Image.Image:
    """Coloured 8x8 cells (a gradient of cells and a block), which the VAE round-trips."""
    y, x = np.mgrid[0:64, 0:64] // 8
    rgb = np.stack([x * 30 + 10, y * 30 + 10, (x + y) * 15 + 5], axis=-1).astype(np.uint8)
    rgb[16:40, 8:24] = (250, 30, 60)
    return Image.fromarray(rgb)


@pytest.fixture(scope="module")
def faithful_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux-faithful-vae")
    cell_mean_vae().save_pretrained(path / "vae", safe_serialization=True)
    return path


def test_vae_round_trips_the_image(faithful_flux_dir: Path) -> None:
    vae = AutoencoderKL.from_pretrained(faithful_flux_dir / "vae")
    image = torch.from_numpy(pixels(cell_image()).astype(np.float32) / 127.5 - 1)
    with torch.no_grad():
        out = vae.decode(vae.encode(image.permute(2, 0, 1)[None]).latent_dist.sample()).sample
    levels = ((out[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy()
    assert np.abs(levels - pixels(cell_image())).max() <= 1


@pytest.fixture(scope="module")
def edits(faithful_flux_dir: Path) -> list[np.ndarray]:
    image = cell_image()
    finished, _ = generate_all(
        faithful_flux_dir,
        [
            image_params(image=image, mask=repaint_mask(), strength=0.75),
            image_params(image=image, strength=0.75),
        ],
    )
    return [pixels(f.output) for f in finished]


def kept_and_repainted(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|a - b| left of the mask (less MARGIN columns) and inside it (less MARGIN)."""
    d = np.abs(a - b)
    return d[:, : 32 - MARGIN], d[:, 32 + MARGIN :]


def test_inpainting_keeps_pixels_outside_the_mask(edits) -> None:
    kept, repainted = kept_and_repainted(edits[0], pixels(cell_image()))
    print("inpaint: kept max/mean", int(kept.max()), float(kept.mean()))
    print("inpaint: repainted max/mean", int(repainted.max()), float(repainted.mean()))
    assert kept.max() <= MAX_KEPT_DIFF and kept.mean() <= MEAN_KEPT_DIFF
    assert repainted.mean() > 10 * MEAN_KEPT_DIFF


def test_without_the_mask_the_same_region_changes(edits) -> None:
    """Image-to-image at the same strength, with no mask to blend, fails the same check."""
    kept, _ = kept_and_repainted(edits[1], pixels(cell_image()))
    print("img2img: same region max/mean", int(kept.max()), float(kept.mean()))
    assert kept.max() > MAX_KEPT_DIFF and kept.mean() > 10 * MEAN_KEPT_DIFF
