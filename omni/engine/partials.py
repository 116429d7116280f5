"""Partial images: previews of a request's picture while it denoises, streamed to its client.

A preview is the VAE decode of the model's current prediction of the clean latents, for a flow
model x0 = x_t - sigma_t * v, taken from the step's own output before the sampler moves the
latents. x0 is a new tensor: the request's latents, sampler state and every other request's
numbers are untouched, so a request's result is the same whether it asks for previews or not.
The forward thread only does that subtraction; the decode runs in the decode stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from omni.request import Request
from omni.samplers.multistep import to_x0


@dataclass(frozen=True, slots=True)
class PreviewJob:
    """One preview to decode: x0 as it stood after `steps_done` of the request's steps."""

    request: Request
    latents: torch.Tensor
    steps_done: int

    def stand_in(self) -> Request:
        """The request with x0 as its latents: what an adapter's `decode` reads."""
        return replace(self.request, latents=self.latents)


@dataclass(frozen=True, slots=True)
class DecodedPreview:
    request_id: str
    steps_done: int
    output: object  # a PIL image, as the final decode gives


def preview_steps(num_steps: int, count: int) -> frozenset[int]:
    """The step counts after which a request with `count` partial images gets one: evenly
    spaced strictly inside its run (a preview after the last step would be the final image),
    so a request with fewer than count + 1 steps gets fewer previews."""
    spaced = {(i + 1) * num_steps // (count + 1) for i in range(count)}
    return frozenset(step for step in spaced if 0 < step < num_steps)


def wants_preview(request: Request) -> bool:
    """Whether the step the request is running now ends at one of its preview points."""
    count = request.params.partial_images
    return bool(count) and request.step_index + 1 in preview_steps(request.num_steps, count)


def due_previews(requests: list[Request], outputs: list[torch.Tensor]) -> list[PreviewJob]:
    """The previews this step makes, from each request's model output at its current step;
    call before the sampler moves the latents."""
    due = [i for i, request in enumerate(requests) if wants_preview(request)]
    if not due:
        return []
    chosen = [requests[i] for i in due]
    sigmas = [float(r.sigmas[r.step_index]) for r in chosen]
    x0 = to_x0([r.latents for r in chosen], [outputs[i] for i in due], sigmas)
    return [PreviewJob(r, x, r.step_index + 1) for r, x in zip(chosen, x0, strict=True)]
