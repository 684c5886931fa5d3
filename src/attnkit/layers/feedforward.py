"""Position-wise feed-forward network (spec part 2, item 1): FFN(x) = W2 act(W1 x + b1) + b2."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.layers.dropout import Dropout

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf) GELU: BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
}


class FeedForward(nn.Module):
    """Two linear maps with an activation between, applied to every position alike.

    x [..., E] -> [..., E]; hidden width d_ff (the paper: 512 -> 2048 -> 512, ReLU).
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.activation = activation
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(ACTIVATIONS[self.activation](self.fc1(x))))
