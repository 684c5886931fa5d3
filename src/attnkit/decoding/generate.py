"""Autoregressive generation: greedy and sampling (temperature, top-k, top-p) over a DecoderSession."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class DecoderSession(Protocol):
    """Incremental decoding state of one model for one batch (its KV caches, encoder output, ...)."""

    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens [B, t] (the prompt, then one token at a time); return logits [B, t, V] for them.

        Each call appends to the state, so a one-token step costs O(current length)."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [B'] in that order (beam search)."""
        ...


@dataclass
class GenerationConfig:
    """max_new_tokens: how many tokens at most; temperature 0 = greedy; top_k / top_p: keep only the k
    most likely tokens / the smallest set with probability >= p; stop_tokens: a row ends after emitting
    one of them (it is kept), then emits ``pad_id``; seed: for reproducible sampling."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = field(default_factory=tuple)
    pad_id: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set to -inf every logit outside the top-k and outside the nucleus of mass top_p. [B, V] -> [B, V]."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the mass before it already reaches top_p (the most likely is always kept).
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_token(logits: Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """logits [B, V] -> token ids [B]."""
    if cfg.temperature == 0.0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(session: DecoderSession, prompt: Tensor, cfg: GenerationConfig) -> Tensor:
    """Feed ``prompt`` [B, T0] to the session, then generate up to ``cfg.max_new_tokens`` tokens.

    Returns the new tokens [B, T_new] (T_new <= max_new_tokens: generation stops early once every row
    has emitted a stop token; rows that stopped earlier are filled with ``cfg.pad_id``)."""
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be [B, T0] with T0 >= 1, got {tuple(prompt.shape)}")
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(cfg.seed)
    b = prompt.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
    stops = torch.tensor(cfg.stop_tokens, dtype=torch.long, device=prompt.device)
    out: list[Tensor] = []
    logits = session.step(prompt)[:, -1]  # (B, V)
    for i in range(cfg.max_new_tokens):
        token = _next_token(logits, cfg, generator)
        token = token.masked_fill(done, cfg.pad_id)
        out.append(token)
        if stops.numel():
            done = done | torch.isin(token, stops)
            if bool(done.all()):
                break
        if i + 1 < cfg.max_new_tokens:
            logits = session.step(token.unsqueeze(1))[:, -1]
    if not out:
        return prompt.new_zeros(b, 0)
    return torch.stack(out, dim=1)
