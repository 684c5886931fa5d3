"""Batched beam search over a DecoderSession (the spec's part 2 decoding), with a length penalty.

Every sentence of the batch keeps ``beam_size`` live hypotheses, all decoded as one batch of B*K rows
through the session's KV caches. At each step the 2K best extensions are ranked; those ending in EOS
among the first K ranks are finished (scored ``sum log p / length ** length_penalty``, length counting
EOS), the K best others live on (fairseq's rule). A sentence is done once it has K finished hypotheses
(``early_stopping=True``), or, with ``early_stopping`` False or "never" (Hugging Face ``generate``'s
heuristics), once the best live hypothesis can no longer beat the worst of its K best finished ones;
hypotheses still alive at ``max_new_tokens`` are finished as they are. With ``beam_size=1`` this is
exactly greedy decoding: the one beam always takes the arg-max token and stops at the first EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from attnkit.decoding.generate import DecoderSession, last_logits, worth_dropping
from attnkit.decoding.rules import TokenRules
from attnkit.derived import frozen_weights


@dataclass
class BeamConfig:
    """beam_size: K; length_penalty: alpha in score / length**alpha (0 = raw log-probability);
    max_new_tokens: hypotheses longer than this are cut; eos_id ends a hypothesis; pad_id fills output;
    rules: banned and forced tokens, no repeated n-grams (applied to each step's log-probabilities);
    early_stopping: when a sentence is done, as ``generate``'s option of that name: True: once it has K
    finished hypotheses; False: once it has K and its best live hypothesis, scored at its current length,
    is no better than the worst of its K best finished ones (``generate``'s default); "never": the same
    with the live hypothesis scored at ``max_new_tokens`` when ``length_penalty`` > 0 (the bound of a
    canonical beam search). With False and "never" the K best finished hypotheses are kept."""

    beam_size: int = 5
    length_penalty: float = 1.0
    max_new_tokens: int = 64
    eos_id: int = 2
    pad_id: int = 0
    rules: TokenRules | None = None
    early_stopping: bool | str = True

    def __post_init__(self) -> None:
        if not (isinstance(self.early_stopping, bool) or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


class BeamOutput(NamedTuple):
    tokens: Tensor  # [B, T_out] best hypothesis per sentence (EOS kept when emitted), padded with pad_id
    scores: Tensor  # [B] its length-normalised log-probability
    # per sentence, its finished hypotheses as (score, tokens), best first: the n-best lists (beam_size of them
    # at most: a sentence is done once it has that many)
    hypotheses: list[list[tuple[float, list[int]]]] | None = None


def beam_search(session: DecoderSession, prompt: Tensor, cfg: BeamConfig) -> BeamOutput:
    """Decode ``prompt`` [B, T0] (e.g. BOS per sentence) with beam search; the session holds batch B and is
    expanded to B*K rows here (``reorder``).

    Work saved without changing the result: the prompt is fed once per sentence, then its state copied to
    the K rows; a new hypothesis stays in its parent's row when it can (so a ``reorder`` copies only the
    rows whose parent changed); the rows of the sentences that are done leave the session (once they are a
    few)."""
    with torch.inference_mode(), frozen_weights():  # inference_mode: cheaper per operation than no_grad
        out = _beam_search(session, prompt, cfg)
    return BeamOutput(out.tokens.clone(), out.scores.clone(), out.hypotheses)  # ordinary tensors


def _beam_search(session: DecoderSession, prompt: Tensor, cfg: BeamConfig) -> BeamOutput:
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be [B, T0] with T0 >= 1, got {tuple(prompt.shape)}")
    b, k, device = prompt.shape[0], cfg.beam_size, prompt.device
    expand = torch.arange(b, device=device).repeat_interleave(k)  # (B*K,)
    first = last_logits(session, prompt)  # (B, V)
    session.reorder(expand)
    logp = _ruled(torch.log_softmax(first.float(), dim=-1)[expand], cfg, 0, prompt[expand])  # (B*K, V)
    v = logp.shape[-1]
    scores = torch.full((b, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep only the first
    history = prompt.new_zeros(b * k, 0)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    done = torch.zeros(b, dtype=torch.bool)
    active = torch.arange(b)  # (A,) the sentence of each group of K session rows
    for step in range(cfg.max_new_tokens):
        a = active.shape[0]
        offsets = (torch.arange(a, device=device) * k).unsqueeze(1)  # (A, 1)
        cand = (scores.unsqueeze(-1) + logp.view(a, k, v)).view(a, k * v)
        top_s, top_i = cand.topk(min(2 * k, k * v), dim=1)  # (A, 2K), best first
        top_beam, top_tok = top_i // v, top_i % v
        is_eos = top_tok == cfg.eos_id
        _finish(finished, done, active, top_s, top_beam, is_eos, history, offsets, k, step + 1, cfg)
        keep_s, keep_j = top_s.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (A, K) live extensions
        if cfg.early_stopping is not True:
            _close(finished, done, active, keep_s[:, 0], step + 1, cfg)
        slot = _slots(top_beam.gather(1, keep_j))  # (A, K) the row of each extension within its sentence
        scores = torch.empty_like(keep_s).scatter_(1, slot, keep_s)
        parent = torch.empty_like(slot).scatter_(1, slot, top_beam.gather(1, keep_j))  # (A, K) by row
        token = torch.empty_like(slot).scatter_(1, slot, top_tok.gather(1, keep_j)).view(-1)  # (A*K,)
        rows = (parent + offsets).view(-1)  # (A*K,) rows of the previous step
        history = torch.cat([history[rows], token.unsqueeze(1)], dim=1)
        if bool(done.all()):
            break
        if step + 1 == cfg.max_new_tokens:
            _finish_alive(finished, done, active, scores, history, k, cfg)
            break
        alive = ~done[active]
        # Drop the rows of the sentences that are done (not from a session whose shapes must stay: fixed_rows).
        if not getattr(session, "fixed_rows", False) and worth_dropping(int((~alive).sum()), a):
            groups = alive.nonzero().squeeze(1)
            keep = (groups.unsqueeze(1) * k + torch.arange(k)).view(-1).to(device)
            active, scores, rows, token, history = (active[groups], scores[groups.to(device)], rows[keep],
                                                    token[keep], history[keep])
        session.reorder(rows)
        logp = torch.log_softmax(last_logits(session, token.unsqueeze(1)).float(), dim=-1)
        if cfg.rules is not None:
            before = prompt[active.to(device)].repeat_interleave(k, 0) if cfg.rules.needs_history else None
            logp = _ruled(logp, cfg, step + 1, None if before is None else torch.cat([before, history], 1))
    return _best(finished, b, cfg, device)


def _ruled(logp: Tensor, cfg: BeamConfig, step: int, history: Tensor) -> Tensor:
    """The log-probabilities [R, V] of generated token ``step`` after ``cfg.rules`` (history [R, t]: the
    decoder input so far)."""
    if cfg.rules is None:
        return logp
    return cfg.rules.apply(logp, step, step + 1 == cfg.max_new_tokens, history)


def _slots(parent: Tensor) -> Tensor:
    """parent [A, K]: the beam (row within its sentence) each new hypothesis extends -> slot [A, K], the row it
    goes to: its parent's row for the first child of each parent, the rows of childless parents for the
    others (a permutation of 0..K-1 per sentence)."""
    a, k = parent.shape
    same = parent.unsqueeze(2) == parent.unsqueeze(1)  # (A, K, K): children j and i share a parent
    earlier = torch.ones(k, k, dtype=torch.bool, device=parent.device).tril(-1)  # (K, K): i < j
    first = ~(same & earlier).any(-1)  # (A, K)
    has_child = torch.zeros(a, k, dtype=torch.bool, device=parent.device).scatter_(1, parent, True)
    free = torch.sort(has_child.to(torch.uint8), dim=1, stable=True).indices  # childless rows first
    rank = ((~first).long().cumsum(1) - 1).clamp(min=0)  # the m-th other child takes the m-th free row
    return torch.where(first, parent, free.gather(1, rank))


def _norm(score: float, length: int, alpha: float) -> float:
    return score / (length**alpha) if alpha else score


def _finish(finished, done, active, top_s, top_beam, is_eos, history, offsets, k, length, cfg) -> None:
    """Finish the EOS extensions ranked among the first K of a sentence that is not done yet."""
    eos_rows, eos_cols = torch.nonzero(is_eos[:, :k] & torch.isfinite(top_s[:, :k]), as_tuple=True)
    for g, c in zip(eos_rows.tolist(), eos_cols.tolist(), strict=True):
        r = int(active[g])
        if done[r]:
            continue
        row = int(top_beam[g, c] + offsets[g, 0])
        tokens = history[row].tolist() + [cfg.eos_id]
        finished[r].append((_norm(float(top_s[g, c]), length, cfg.length_penalty), tokens))
        if len(finished[r]) >= k and cfg.early_stopping is True:
            done[r] = True


def _close(finished, done, active, best_live: Tensor, length: int, cfg: BeamConfig) -> None:
    """early_stopping False / "never": a sentence with K finished hypotheses is done once its best live
    hypothesis (raw score ``best_live`` [A], ``length`` tokens; for "never" with a positive length penalty
    scored at ``max_new_tokens``) is no better than the worst of its K best finished ones."""
    k = cfg.beam_size
    at = cfg.max_new_tokens if cfg.early_stopping == "never" and cfg.length_penalty > 0 else length
    for r, live in zip(active.tolist(), best_live.tolist(), strict=True):
        if done[r] or len(finished[r]) < k:
            continue
        worst = sorted((s for s, _ in finished[r]), reverse=True)[k - 1]
        if _norm(live, at, cfg.length_penalty) <= worst:
            done[r] = True


def _finish_alive(finished, done, active, scores, history, k, cfg) -> None:
    for g, r in enumerate(active.tolist()):
        if done[r]:
            continue
        for j in range(k):
            s = float(scores[g, j])
            if s != float("-inf"):
                finished[r].append((_norm(s, history.shape[1], cfg.length_penalty), history[g * k + j].tolist()))


def _best(finished, b: int, cfg: BeamConfig, device) -> BeamOutput:
    ranked = [sorted(f, key=lambda h: -h[0]) for f in finished]  # stable: ties keep the order of finishing
    if cfg.early_stopping is not True:  # the K best (a sentence may have finished more)
        ranked = [r[: cfg.beam_size] for r in ranked]
    best = [r[0] for r in ranked]
    width = max(len(t) for _, t in best)
    tokens = torch.full((b, width), cfg.pad_id, dtype=torch.long, device=device)
    for r, (_, t) in enumerate(best):
        tokens[r, : len(t)] = torch.tensor(t, dtype=torch.long)
    return BeamOutput(tokens, torch.tensor([s for s, _ in best]), ranked)
