"""Layer blocks shared by every model family (Transformer encoder-decoder, GPT, BERT)."""

from attnkit.layers.blocks import LayerCache, LayerOutput, LayerStack, StackOutput, TransformerLayer
from attnkit.layers.embeddings import Embeddings, sinusoidal_table
from attnkit.layers.feedforward import FeedForward

__all__ = ["Embeddings", "FeedForward", "LayerCache", "LayerOutput", "LayerStack", "StackOutput", "TransformerLayer",
           "sinusoidal_table"]
