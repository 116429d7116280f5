"""omni: a serving engine for diffusion image and video models with step-level batching."""

__version__ = "0.1.0"
