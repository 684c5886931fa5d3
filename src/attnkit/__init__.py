"""attnkit: attention mechanisms and the Transformer family, verified against PyTorch and Hugging Face."""

__version__ = "0.1.0"
