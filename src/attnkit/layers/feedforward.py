"""Position-wise feed-forward network (spec part 2, item 1): FFN(x) = W2 act(W1 x + b1) + b2, and its gated
form (Shazeer 2020, "GLU Variants Improve Transformer"; the Llama lineage's SwiGLU):
FFN(x) = W2 (silu(W_gate x) * W1 x), Hugging Face's ``down(act(gate(x)) * up(x))`` with up = ``fc1`` and
down = ``fc2``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.layers.dropout import Dropout

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf) GELU: BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "silu": F.silu,  # x * sigmoid(x), "swish": Marian (OPUS-MT)
}
GATED = {"swiglu": F.silu}  # gated activations: act(gate(x)) * fc1(x)


class FeedForward(nn.Module):
    """Two linear maps with an activation between (or, for a gated activation, a gate beside the first),
    applied to every position alike.

    x [..., E] -> [..., E]; hidden width d_ff (the paper: 512 -> 2048 -> 512, ReLU). activation: one of
    ``ACTIVATIONS`` or ``GATED`` ("swiglu": a third matrix ``gate`` [d_ff, E]).
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: str = "relu", dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS and activation not in GATED:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted({**ACTIVATIONS, **GATED})}")
        self.activation = activation
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if activation in GATED else None
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.fc2(self.dropout(GATED[self.activation](self.gate(x)) * self.fc1(x)))
        return self.fc2(self.dropout(ACTIVATIONS[self.activation](self.fc1(x))))
