"""Decoding, written once for every model that can decode one step at a time (gpt-fast style: free
functions outside the models).

A model offers a :class:`DecoderSession` (its KV caches plus whatever it needs, e.g. the encoder output)
and these functions drive it: ``generate`` (greedy, temperature, top-k, top-p, stop tokens, seed) and
beam search (``attnkit.decoding.beam``).
"""

from attnkit.decoding.generate import DecoderSession, GenerationConfig, filter_logits, generate

__all__ = ["DecoderSession", "GenerationConfig", "filter_logits", "generate"]
