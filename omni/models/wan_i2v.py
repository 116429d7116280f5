"""Wan image-to-video: the input image's check, and WanImageToVideoPipeline's condition."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from omni.errors import InvalidRequestError
from omni.request import Request

if TYPE_CHECKING:
    from omni.models.wan import WanAdapter


def check_image(name: str, is_image_to_video: bool, image: Any) -> None:
    if image is not None and not is_image_to_video:
        raise InvalidRequestError(
            f"{name} is a text-to-video model: it takes no input image", param="image"
        )
    if image is None and is_image_to_video:
        raise InvalidRequestError(
            f"{name} is an image-to-video model: an input image is required", param="image"
        )
    if image is not None and not isinstance(image, Image.Image):
        raise InvalidRequestError("the input image could not be read as an image", "image")


def image_conditions(adapter: WanAdapter, requests: list[Request]) -> dict[int, torch.Tensor]:
    """WanImageToVideoPipeline's condition: first-frame mask channels + the encoded clip
    of the input image followed by blank frames, one batched VAE encode per video shape."""
    by_shape: dict[tuple[int, int, int], list[Request]] = {}
    for request in requests:
        p = request.params
        by_shape.setdefault((p.num_frames, p.height, p.width), []).append(request)
    conditions: dict[int, torch.Tensor] = {}
    vae = adapter.pipe.vae
    for (num_frames, height, width), group in by_shape.items():
        images = torch.cat(
            [
                adapter.pipe.video_processor.preprocess(
                    r.params.image.convert("RGB"), height=height, width=width
                )
                for r in group
            ]
        ).to(adapter.device, torch.float32)
        blank = images.new_zeros(len(group), 3, num_frames - 1, height, width)
        clip = torch.cat([images.unsqueeze(2), blank], dim=2).to(vae.device, vae.dtype)
        with adapter.vae_lock:
            encoded = vae.encode(clip).latent_dist.mode()
        encoded = encoded.to(adapter.device, torch.float32)
        encoded = (encoded - adapter.latents_mean) * adapter.latents_inv_std
        mask = encoded.new_zeros(len(group), adapter.temporal, *encoded.shape[2:])
        mask[:, :, 0] = 1
        condition = torch.cat([mask, encoded], dim=1)
        for request, row in zip(group, condition.split(1), strict=True):
            conditions[id(request)] = row
    return conditions
