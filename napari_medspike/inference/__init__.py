"""Inference: pre/post-processing, resize or tiled prediction, device choice."""
