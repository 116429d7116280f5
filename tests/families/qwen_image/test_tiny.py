"""The tiny Qwen-Image model has the real one's text layout: its template prefix is the 34
tokens the pipeline drops, and the chat-template markers are single special tokens."""

from __future__ import annotations

from diffusers import QwenImagePipeline


def test_the_template_prefix_is_exactly_what_the_pipeline_drops(tiny_qwen_image_dir):
    pipe = QwenImagePipeline.from_pretrained(tiny_qwen_image_dir)
    prefix = pipe.prompt_template_encode.split("{}")[0]
    tokens = pipe.tokenizer.tokenize(prefix)
    assert len(tokens) == pipe.prompt_template_encode_start_idx == 34
    assert tokens[0] == tokens[-3] == "<|im_start|>" and "<|im_end|>" in tokens
    assert pipe.tokenizer.tokenize("<|im_end|>") == ["<|im_end|>"]
    embeds, mask = pipe.encode_prompt("a cat", device="cpu")
    # "a", " cat", then <|im_end|> \n <|im_start|> assistant \n
    assert embeds.shape[1] == 7 and mask is None
