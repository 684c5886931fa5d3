"""The one mask rule of attnkit: boolean, True = may attend.

Foreign conventions are converted only at the boundary: PyTorch's ``key_padding_mask`` is True = ignore,
Hugging Face's ``attention_mask`` is 1 = attend.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(t: int, s: int | None = None, *, offset: int | None = None, window: int | None = None,
                device=None) -> Tensor:
    """Mask of a decoder's self-attention: query i (at position offset + i) sees keys <= it, and with a
    sliding ``window`` W (Mistral's) only the last W of them: keys j with q - W < j <= q.

    Args:
        t: number of queries T. s: number of keys S (default T).
        offset: position of the first query among the keys (default S - T: the queries are the last T
            keys, as in cached decoding).
        window: W >= 1, or None for no window.
    Returns: bool [T, S], True = may attend.
    """
    s = t if s is None else s
    offset = s - t if offset is None else offset
    q = torch.arange(t, device=device).unsqueeze(1) + offset
    k = torch.arange(s, device=device).unsqueeze(0)
    if window is None:
        return k <= q
    if window < 1:
        raise ValueError(f"the attention window must be >= 1, got {window}")
    return (k <= q) & (k > q - window)


def self_attention_mask(mask: Tensor | None, causal: bool, t: int, s: int, window: int | None = None,
                        device=None) -> Tensor | None:
    """The mask of a self-attention call: ``mask`` (padding, or None) and, when ``causal``, the causal rule
    (with ``window``) for T queries that are the last of S keys; None when nothing is masked. A single
    query needs no causal mask (it is the newest key), nor does any query when no key is W behind it."""
    need_causal = causal and t > 1
    need_window = causal and window is not None and s > window
    if not (need_causal or need_window):
        return mask
    cm = causal_mask(t, s, window=window, device=device)  # (T, S)
    return cm if mask is None else mask & cm


def padding_mask(keep: Tensor) -> Tensor:
    """Key-padding mask for multi-head attention from a [B, S] tensor (bool, or ids with 1 = real token).

    Returns: bool [B, 1, 1, S] (broadcasts over heads and queries), True = may attend.
    """
    if keep.dim() != 2:
        raise ValueError(f"padding_mask expects a [B, S] tensor, got shape {tuple(keep.shape)}")
    return keep.bool()[:, None, None, :]


def check_mask(mask: Tensor, scores_shape: tuple[int, ...], name: str = "mask") -> None:
    """Raise ValueError unless ``mask`` is boolean and broadcastable to ``scores_shape``."""
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a boolean tensor (True = may attend), got dtype {mask.dtype}")
    if mask.dim() > len(scores_shape):
        raise ValueError(
            f"{name} of shape {tuple(mask.shape)} has more dimensions than the scores {tuple(scores_shape)}"
        )
    for m, s in zip(reversed(mask.shape), reversed(scores_shape), strict=False):
        if m not in (1, s):
            raise ValueError(
                f"{name} of shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                f"{tuple(scores_shape)}"
            )


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax over ``dim`` restricted to allowed positions; a row with no allowed position gives zeros.

    scores: [..., N] float; mask: bool broadcastable to scores (True = may attend) or None.
    Returns: weights with the scores' shape, summing to 1 over allowed positions (or all 0).
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    # A fully masked row is all -inf, whose softmax is NaN: define it as zero weight everywhere.
    return weights.nan_to_num(0.0)
