"""BERT's masked-LM corruption (Devlin et al. 2019, section 3.1).

15% of the real (non-special, non-padding) tokens are chosen as prediction targets; of those, 80% are
replaced by [MASK], 10% by a random token and 10% left unchanged. The model must predict the original
token at every chosen position (labels elsewhere are ``IGNORE``). Randomness comes from an explicit
``torch.Generator``, so a batch's corruption depends only on its seed (exact resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

IGNORE = -100  # label of positions that are not predicted (PyTorch's cross-entropy ignore_index)


class MaskedBatch(NamedTuple):
    input_ids: Tensor  # [B, T] corrupted ids
    labels: Tensor  # [B, T] original id at chosen positions, IGNORE elsewhere


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Sequence[int],
    generator: torch.Generator,
    prob: float = 0.15,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> MaskedBatch:
    """Corrupt input_ids [B, T] for masked-LM training (attention_mask [B, T]: 1 = real token).

    Each real token is chosen independently with probability ``prob``; a chosen token becomes [MASK]
    with probability ``mask_frac``, a uniformly random non-special token with ``random_frac``, and stays
    as it is otherwise. If no token of the batch is chosen, one is picked so the loss is defined.
    """
    if input_ids.shape != attention_mask.shape:
        raise ValueError(f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ")
    if not 0.0 < prob <= 1.0 or mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1.0:
        raise ValueError(f"bad masking probabilities: prob={prob}, mask_frac={mask_frac}, random_frac={random_frac}")
    specials = torch.tensor(list(special_ids), dtype=input_ids.dtype)
    candidate = attention_mask.bool() & ~torch.isin(input_ids, specials)  # (B, T)
    u = torch.rand(input_ids.shape, generator=generator)
    chosen = candidate & (u < prob)
    if not chosen.any() and candidate.any():
        first = candidate.flatten().nonzero()[0]
        chosen.view(-1)[first] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (action < mask_frac)
    to_random = chosen & (action >= mask_frac) & (action < mask_frac + random_frac)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[specials] = False
    pool = allowed.nonzero().squeeze(1)  # (V',) ids a random replacement may take
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    corrupted = torch.where(to_random, random_ids.to(input_ids.dtype), corrupted)
    return MaskedBatch(corrupted, labels)


def batch_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator that corrupts batch ``index`` of epoch ``epoch``: independent of any global state."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)
