"""Continuous batching of GPT generation: the rows of many requests decoded as one batch, a finished row
leaving and a waiting request joining at the next step.

One :class:`~attnkit.models.gpt.GPTSession` holds every live row. Rows are right-aligned: each row's tokens
end at the session's last column, with masked padding before them (the session's ``key_mask``) and their
own positions (``next_pos``), as a left-padded prompt batch is. A joining request is prefilled in a session
of its own (the prompt fed once), then the two sessions are *restacked* into one: the rows kept, copied so
that they end at the same column, the common left padding dropped. Rows that finish (stop token, token
budget) or whose client went away leave the same way. Each row samples with its own ``torch.Generator``
seeded by its request, one draw per step, so a row draws the same numbers as the request decoded alone
(:meth:`attnkit.tasks.lm.Generator.generate`): greedy rows give the same tokens, sampled rows the same
tokens for the same seed (up to the last-bit differences of batched arithmetic, which tests check do not
change a token).

A request whose prompt + new tokens exceed the context is generated alone by the Generator (which goes on
in windows past the context); a model with a sliding-window cache is batched without joining (a batch runs
to its end; ``continuous=False`` does the same for every model).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnkit.decoding.generate import GenerationConfig, _generate_windows, _next_token, last_logits, left_pad
from attnkit.decoding.textstream import TextStream
from attnkit.models.gpt import GPT, GPTSession
from attnkit.tasks.lm import Generator

MAX_SEED = 2**63 - 1


@dataclass
class GenerationJob:
    """One request: its prompt ids, settings and the callbacks that carry its tokens back.

    on_token(text): the new text of a step, whole characters only (:class:`~attnkit.decoding.textstream.TextStream`);
    cancelled(): whether the client went away (its row leaves at the next step)."""

    ids: list[int]
    config: GenerationConfig  # max_new_tokens, temperature, top_k, top_p, stop_tokens, seed (always set here)
    on_token: Callable[[str], None] = lambda text: None
    cancelled: Callable[[], bool] = lambda: False
    prompt: str = ""  # the prompt as text, as the answer shows it (a chat's rendered template)


@dataclass
class Generated:
    text: str
    tokens: int
    finish_reason: str  # "stop" | "length"
    seed: int | None


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one (returned to the client, so that the result can be reproduced)."""
    return secrets.randbelow(MAX_SEED) if seed is None else seed


@dataclass
class _Row:
    job: GenerationJob
    finish: Callable[[Generated], None]
    generator: torch.Generator | None
    stream: TextStream
    new: list[int] = field(default_factory=list)
    logits: Tensor | None = None  # [1, V] for the next token


def row_lengths(session: GPTSession) -> Tensor:
    """Real tokens of each row of a right-aligned session [B]."""
    if session.next_pos is not None:
        return session.next_pos
    batch = session.caches[0].self_attn.batch_size or 0
    return torch.full((batch,), session.length, dtype=torch.long)


def restack(model: GPT, parts: list[tuple[GPTSession, Tensor]], capacity: int) -> GPTSession:
    """One session of the rows ``index`` of each ``(session, index)`` in ``parts`` (in that order), right-aligned
    at the shortest length that holds them: every row keeps its keys, values and positions, padding columns are
    masked (and zero). Needs caches without a sliding window."""
    lengths = [row_lengths(s)[idx] for s, idx in parts]
    n = sum(len(idx) for _, idx in parts)
    width = int(max(int(x.max()) for x in lengths))  # (the session's new length)
    out = GPTSession(model, None, capacity)
    key_mask = torch.zeros(n, capacity, dtype=torch.bool)
    key_mask[:, width:] = True
    for layer, cache in enumerate(out.caches):
        k = v = None
        row = 0
        for session, idx in parts:
            sk, sv = session.caches[layer].self_attn.view()  # (B, H, length, Dh)
            if k is None:
                k = sk.new_zeros(n, sk.shape[1], capacity, sk.shape[3])
                v = sv.new_zeros(n, sv.shape[1], capacity, sv.shape[3])
            w = min(width, session.length)
            k[row : row + len(idx), :, width - w : width] = sk[idx, :, session.length - w :]
            v[row : row + len(idx), :, width - w : width] = sv[idx, :, session.length - w :]
            row += len(idx)
        cache.self_attn.k, cache.self_attn.v, cache.self_attn.length = k, v, width
    row = 0
    for session, idx in parts:
        w = min(width, session.length)
        if session.key_mask is None:
            key_mask[row : row + len(idx), width - w : width] = True
        else:
            src = session.key_mask[idx]  # (n, capacity)
            key_mask[row : row + len(idx), width - w : width] = src[:, session.length - w : session.length]
        row += len(idx)
    next_pos = torch.cat(lengths)
    out.length = width
    if not bool(key_mask.all()):  # no padding: the session a prompt batch of one length would have
        out.key_mask, out.next_pos = key_mask.to(next_pos.device), next_pos.clone()
    return out


class ContinuousGenerator:
    """The generation batch of one GPT model; driven by one worker thread (``admit``, ``step``)."""

    def __init__(self, generator: Generator, max_rows: int, continuous: bool = True) -> None:
        self.generator, self.model = generator, generator.model
        self.capacity = self.model.config.max_len
        self.max_rows = max_rows
        self.continuous = continuous and getattr(self.model.config, "window", None) is None
        self.rows: list[_Row] = []
        self.session: GPTSession | None = None
        self.device = next(self.model.parameters()).device

    @property
    def active(self) -> int:
        return len(self.rows)

    def batchable(self, job: GenerationJob) -> bool:
        """Whether the job fits in the context without windows (else :meth:`run_alone`)."""
        return len(job.ids) + job.config.max_new_tokens <= self.capacity

    def fits(self, jobs: list[GenerationJob]) -> bool:
        """Whether ``jobs`` can join now: room for their rows, and every row (old and new) can decode all its
        remaining tokens within the context after the join."""
        if not jobs:
            return True
        if len(self.rows) + len(jobs) > self.max_rows or (self.rows and not self.continuous):
            return False
        width = max([len(j.ids) for j in jobs] + ([self.session.length] if self.session is not None else []))
        need = [j.config.max_new_tokens for j in jobs] + [r.job.config.max_new_tokens - len(r.new) for r in self.rows]
        return width + max(need) - 1 <= self.capacity

    def admit(self, jobs: list[GenerationJob], finishers: list[Callable[[Generated], None]]) -> None:
        """Prefill ``jobs`` (one session, left-padded) and join them to the batch."""
        for job, finish in zip(jobs, finishers, strict=True):
            if job.config.max_new_tokens == 0:  # nothing to generate (as Generator.generate gives)
                finish(Generated("", 0, "length", job.config.seed))
        finishers = [f for j, f in zip(jobs, finishers, strict=True) if j.config.max_new_tokens > 0]
        jobs = [j for j in jobs if j.config.max_new_tokens > 0]
        if not jobs:
            return
        ids, mask = left_pad([j.ids for j in jobs])
        session = self.model.start_decoding(prompt_mask=mask.to(self.device), max_len=self.capacity)
        logits = last_logits(session, ids.to(self.device))  # (N, V)
        for i, (job, finish) in enumerate(zip(jobs, finishers, strict=True)):
            seed = job.config.seed
            gen = None if job.config.temperature == 0.0 else torch.Generator(device=self.device).manual_seed(seed)
            stream = TextStream(self.generator.tokenizer.decode)
            self.rows.append(_Row(job, finish, gen, stream, logits=logits[i : i + 1]))
        if self.session is None:
            self.session = session
        else:
            old = torch.arange(len(self.rows) - len(jobs), device=self.device)
            new = torch.arange(len(jobs), device=self.device)
            self.session = restack(self.model, [(self.session, old), (session, new)], self.capacity)

    def step(self) -> int:
        """One token for every row: sample, hand out its text, let finished rows leave, feed the rest. Returns
        the number of tokens generated."""
        keep, tokens, made = [], [], 0
        for i, row in enumerate(self.rows):
            if row.job.cancelled():
                continue
            cfg = row.job.config
            token = int(_next_token(row.logits, cfg, row.generator)[0])
            row.new.append(token)
            made += 1
            piece = row.stream.push(token)
            stopped = token in cfg.stop_tokens
            if stopped or len(row.new) >= cfg.max_new_tokens:
                piece += row.stream.flush()
                if piece:
                    row.job.on_token(piece)
                text = self.generator.tokenizer.decode(row.new)  # what the pieces add up to
                row.finish(Generated(text, len(row.new), "stop" if stopped else "length", cfg.seed))
                continue
            if piece:
                row.job.on_token(piece)
            keep.append(i)
            tokens.append(token)
        self._keep(keep)
        if self.rows:
            feed = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)  # (R, 1)
            logits = last_logits(self.session, feed)  # (R, V)
            for i, row in enumerate(self.rows):
                row.logits = logits[i : i + 1]
        return made

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.session = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        if self.continuous:  # restack: the rows left, without the padding only the departed rows needed
            self.session = restack(self.model, [(self.session, index)], self.capacity)
        else:
            self.session.reorder(index)

    def run_alone(self, job: GenerationJob) -> Generated:
        """A request longer than the context, alone: the Generator's windowed decoding (the last half of the
        context fed again once it is full; see :func:`attnkit.decoding.generate.generate_text`)."""
        cfg = job.config
        torch.manual_seed(cfg.seed)  # as Generator.generate does
        new = _generate_windows(self.model, [job.ids], cfg, self.device, self.capacity)[0]
        text = self.generator.tokenizer.decode(new)
        job.on_token(text)
        stopped = bool(new) and new[-1] in cfg.stop_tokens
        return Generated(text, len(new), "stop" if stopped else "length", cfg.seed)
