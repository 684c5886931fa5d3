"""Hugging Face checkpoints: the only place foreign weight names live.

``common`` reads and writes a Hugging Face model directory (config.json + model.safetensors, or a
pytorch_model.bin read with ``weights_only=True``); ``gpt2`` and ``bert`` map the names and layouts of
those families onto attnkit's modules and back.
"""
