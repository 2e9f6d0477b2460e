"""llava_df: a LLaVA-style deepfake detector with interchangeable projectors."""

__version__ = "0.1.0"
