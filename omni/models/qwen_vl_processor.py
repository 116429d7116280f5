"""The Qwen2VLProcessor that Qwen-Image-Edit pipelines feed the Qwen2.5-VL encoder with.

transformers builds a Qwen2VLProcessor only with its video half, and that half needs
torchvision. Edits never pass videos, so without torchvision omni loads the same saved
processor (`processor/` of the model directory) as `ImageQwen2VLProcessor`: Qwen2VLProcessor's
own code for text and images, minus the video processor. With torchvision the real class loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

PROCESSOR_FOLDER = "processor"  # where diffusers saves a pipeline's `processor` component


class ImageQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor over an image processor and a tokenizer only."""

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **_
    ) -> None:
        self.image_token = "<|image_pad|>"
        self.video_token = "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(model_dir: Path) -> Qwen2VLProcessor:
    """The model's saved processor: transformers' class when torchvision is installed."""
    cls = Qwen2VLProcessor if is_torchvision_available() else ImageQwen2VLProcessor
    return cls.from_pretrained(Path(model_dir) / PROCESSOR_FOLDER)
