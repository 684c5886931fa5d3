"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer"), the positions of the Llama lineage.

Instead of adding a position vector to the input, each head's queries and keys are rotated in pairs of
dimensions, pair i by the angle ``position * inv_freq[i]`` with ``inv_freq[i] = theta ** (-2i / Dh)``. A
rotation by angle a followed by the transposed rotation by b is the rotation by a - b, so the score
``q_m . k_n`` depends only on the relative position m - n. Keys are rotated once, at their absolute
position, before they enter the KV cache (:class:`~attnkit.attention.multihead.MultiHeadAttention` does
this), so a cached key never needs rotating again.

Two layouts of the pairs are in use:

* rotate-half (Llama, Qwen, Mistral, GPT-NeoX): pair i is dimensions (i, i + Dh/2);
* interleaved (GPT-J, the RoFormer paper): pair i is dimensions (2i, 2i + 1).

Frequency scaling for contexts longer than the training one (:class:`RopeScaling`): ``"linear"`` divides
every frequency by ``factor`` (position interpolation); ``"llama3"`` (Llama 3.1) divides only the low
frequencies (wavelength above ``original_max_len / low_freq_factor``), keeps the high ones (wavelength
below ``original_max_len / high_freq_factor``) and blends linearly between. The arithmetic follows the
checkpoints' own code in float32 (Hugging Face's ``modeling_rope_utils``), so loaded models match it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

SCALINGS = ("linear", "llama3")


@dataclass(frozen=True)
class RopeScaling:
    """A frequency-scaling scheme: ``kind`` "linear" (uses ``factor``) or "llama3" (all four fields)."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192

    def __post_init__(self) -> None:
        if self.kind not in SCALINGS:
            raise ValueError(f"RoPE scaling must be one of {SCALINGS}, got {self.kind!r}")
        if self.factor <= 0:
            raise ValueError(f"RoPE scaling factor must be positive, got {self.factor}")
        if self.kind == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError("llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor")

    def to_dict(self) -> dict:
        return asdict(self)


def rope_frequencies(head_dim: int, theta: float = 10000.0, scaling: RopeScaling | None = None) -> Tensor:
    """inv_freq [Dh/2] (float32): ``theta ** (-2i / Dh)`` for pair i, then scaled."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head width, got {head_dim}")
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    low_wavelen = scaling.original_max_len / scaling.low_freq_factor  # longer waves: divided by factor
    high_wavelen = scaling.original_max_len / scaling.high_freq_factor  # shorter waves: kept
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates queries or keys [B, H, T, Dh] by their positions. No parameters (``inv_freq`` is a buffer
    that is not saved), so one instance may serve every layer.

    Args: head_dim: Dh (even). theta: the base. scaling: a RopeScaling or None. interleaved: GPT-J's layout
    of the pairs instead of rotate-half."""

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling: RopeScaling | None = None,
                 interleaved: bool = False) -> None:
        super().__init__()
        self.head_dim, self.theta, self.scaling, self.interleaved = head_dim, theta, scaling, interleaved
        self.register_buffer("inv_freq", rope_frequencies(head_dim, theta, scaling), persistent=False)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, scaling={self.scaling}, interleaved={self.interleaved}"

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """positions [T] or [B, T] (absolute) -> cos, sin [1|B, 1, T, Dh], each angle repeated for both
        dimensions of its pair (in the layout's order); computed in float32 (float64 for a float64 module)
        whatever ``dtype`` they are returned in, as the checkpoints' own code does."""
        work = torch.promote_types(self.inv_freq.dtype, torch.float32)
        angles = positions.to(work)[..., None] * self.inv_freq.to(work)  # (B?, T, Dh/2)
        if self.interleaved:
            angles = angles.repeat_interleave(2, dim=-1)  # (B?, T, Dh): pairs (2i, 2i+1)
        else:
            angles = torch.cat((angles, angles), dim=-1)  # (B?, T, Dh): pairs (i, i + Dh/2)
        if angles.dim() == 2:
            angles = angles[None]
        angles = angles[:, None]  # (B|1, 1, T, Dh)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def _rotate(self, x: Tensor) -> Tensor:
        """x rotated by a quarter turn in each pair: (a, b) -> (-b, a)."""
        if self.interleaved:
            return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def apply(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x [B, H, T, Dh] rotated by the angles of :meth:`cos_sin` (computed once for queries and keys)."""
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE of head width {self.head_dim} got {tuple(x.shape)}")
        return x * cos + self._rotate(x) * sin

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x [B, H, T, Dh], positions [T] or [B, T] -> x rotated, [B, H, T, Dh]."""
        return self.apply(x, *self.cos_sin(positions, x.dtype))
