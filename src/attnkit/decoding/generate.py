"""Autoregressive generation: greedy and sampling (temperature, top-k, top-p) over a DecoderSession, and
``generate_text``, the same on text through a tokenizer (prompts of different lengths left-padded)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor

from attnkit.decoding.rules import TokenRules
from attnkit.decoding.textstream import TextStream
from attnkit.derived import frozen_weights

# Greedy and beam search drop finished rows from the session once they are at least 1/_DROP_EVERY of its
# rows (each drop copies the caches of every row left, so dropping at every finished row costs more).
_DROP_EVERY = 8


def worth_dropping(finished: int, rows: int) -> bool:
    """Whether ``finished`` of the session's ``rows`` rows are enough to drop them now."""
    return finished * _DROP_EVERY >= rows


class DecoderSession(Protocol):
    """Incremental decoding state of one model for one batch (its KV caches, encoder output, ...)."""

    def step(self, tokens: Tensor) -> Tensor:
        """Feed tokens [B, t] (the prompt, then one token at a time); return logits [B, t, V] for them.

        Each call appends to the state, so a one-token step costs O(current length)."""
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` [B'] in that order (beam search)."""
        ...

    # Optional: ``step_last(tokens [B, t]) -> logits [B, V]`` of the last position only; ``generate`` uses
    # it when present (a model then skips the output projection of every other prompt position).
    # ``fixed_rows = True``: finished rows are not dropped (a compiled session's shapes must stay the same;
    # see attnkit.attention.cache.StaticKVCache).


@dataclass
class GenerationConfig:
    """max_new_tokens: how many tokens at most; temperature 0 = greedy; top_k / top_p: keep only the k
    most likely tokens / the smallest set with probability >= p; stop_tokens: a row ends after emitting
    one of them (it is kept), then emits ``pad_id``; seed: for reproducible sampling; rules: banned and forced
    tokens, no repeated n-grams (:class:`~attnkit.decoding.rules.TokenRules`, applied before temperature)."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = field(default_factory=tuple)
    pad_id: int = 0
    seed: int | None = None
    rules: TokenRules | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.temperature >= 0:  # NaN too
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
        drop_sorted[..., 0] = False  # (a top_p below float32's range is 0 there: 0 >= 0 would drop it)
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_token(logits: Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """logits [B, V] -> token ids [B]."""
    if cfg.temperature == 0.0:
        return logits.argmax(-1)
    scaled = logits.float() / cfg.temperature
    if bool((torch.isnan(scaled) | torch.isposinf(scaled)).any()):
        # A tiny temperature overflows float32: divide the distances to the best logit, in float64, instead
        # (the same distribution, which then puts all its mass on the arg-max).
        scaled = ((logits.double() - logits.double().amax(-1, keepdim=True)) / cfg.temperature).float()
    logits = filter_logits(scaled, cfg.top_k, cfg.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# Called after each generation step with that step's tokens [B] and which rows emitted one [B] (False: the
# row had stopped and got ``pad_id``), in the rows' input order: how generation streams.
StepCallback = Callable[[Tensor, Tensor], None]


def generate(session: DecoderSession, prompt: Tensor, cfg: GenerationConfig,
             on_step: StepCallback | None = None) -> Tensor:
    """Feed ``prompt`` [B, T0] to the session, then generate up to ``cfg.max_new_tokens`` tokens.

    Returns the new tokens [B, T_new] (T_new <= max_new_tokens: generation stops early once every row
    has emitted a stop token; rows that stopped earlier are filled with ``cfg.pad_id``). Runs under
    ``torch.inference_mode`` in a frozen-weights block; the result is an ordinary tensor, usable in autograd
    afterwards. ``on_step``: see :data:`StepCallback`."""
    with torch.inference_mode(), frozen_weights():
        tokens = _generate(session, prompt, cfg, on_step)
    return tokens.clone()


def _generate(session: DecoderSession, prompt: Tensor, cfg: GenerationConfig,
              on_step: StepCallback | None = None) -> Tensor:
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be [B, T0] with T0 >= 1, got {tuple(prompt.shape)}")
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=prompt.device).manual_seed(cfg.seed)
    b = prompt.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
    stops = torch.tensor(cfg.stop_tokens, dtype=torch.long, device=prompt.device)
    out = prompt.new_full((b, cfg.max_new_tokens), cfg.pad_id)
    rows = torch.arange(b, device=prompt.device)  # (R,) the output row of each session row
    logits = last_logits(session, prompt)  # (B, V)
    n = 0
    for i in range(cfg.max_new_tokens):
        if cfg.rules is not None:
            history = torch.cat([prompt[rows], out[rows, :i]], 1) if cfg.rules.needs_history else None
            logits = cfg.rules.apply(logits, i, i + 1 == cfg.max_new_tokens, history)
        token = _next_token(logits, cfg, generator).masked_fill(done, cfg.pad_id)  # (R,)
        out[rows, i] = token
        n = i + 1
        if on_step is not None:
            emitted = torch.zeros(b, dtype=torch.bool, device=prompt.device)
            emitted[rows] = ~done  # the rows that had not stopped before this step
            on_step(out[:, i], emitted)
        if stops.numel():
            done = done | torch.isin(token, stops)
            if bool(done.all()):
                break
            # Greedy decoding drops the stopped rows from the session once they are a few (their steps are
            # wasted work; dropping copies the others' caches). Sampling keeps them, so that a seed draws the
            # same random numbers whatever stops when.
            if (cfg.temperature == 0.0 and not getattr(session, "fixed_rows", False)
                    and worth_dropping(int(done.sum()), done.numel())):
                keep = (~done).nonzero().squeeze(1)
                session.reorder(keep)
                rows, token, done = rows[keep], token[keep], done[keep]
        if i + 1 < cfg.max_new_tokens:
            logits = last_logits(session, token.unsqueeze(1))
    return out[:, :n]


def last_logits(session: DecoderSession, tokens: Tensor) -> Tensor:
    """Feed tokens [B, t] to the session; logits [B, V] of the last position (``step_last`` when it has it)."""
    step_last = getattr(session, "step_last", None)
    return step_last(tokens) if step_last is not None else session.step(tokens)[:, -1]


class PromptedModel(Protocol):
    """A model that opens a DecoderSession for a (left-padded) prompt batch, e.g. ``attnkit.models.gpt.GPT``."""

    def start_decoding(self, prompt_mask: Tensor | None = None, max_len: int | None = None,
                       compile: bool = False) -> DecoderSession: ...


class TextCodec(Protocol):
    """What generate_text needs of a tokenizer (``attnkit.tokenizers.char.TextTokenizer``)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def left_pad(rows: list[list[int]], pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Token-id lists of different lengths -> (ids [B, T0], mask [B, T0]), padded on the left so that every
    row ends at the last column (where generation continues). mask: True = real token."""
    if not rows or min(len(r) for r in rows) == 0:
        raise ValueError("left_pad needs at least one row and no empty row")
    t0 = max(len(r) for r in rows)
    ids = torch.full((len(rows), t0), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), t0, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, t0 - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, t0 - len(r) :] = True
    return ids, mask


def _prompt_rows(tokenizer: TextCodec, prompts: list[str | list[int]], context: int | None) -> list[list[int]]:
    rows = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    if context is not None and max(len(r) for r in rows) > context:
        raise ValueError(f"a prompt is longer than the context of {context} tokens")
    return rows


def generate_text(
    model: PromptedModel, tokenizer: TextCodec, prompts: list[str | list[int]], cfg: GenerationConfig,
    device: torch.device | str = "cpu", context: int | None = None, compile: bool = False,
) -> list[str]:
    """Continue each prompt (text, or token ids); returns the generated text of each (without the prompt,
    up to and including a stop token). Prompts of different lengths are decoded together (left-padded),
    each exactly as it would be alone.

    ``context``: the model's maximum length. When prompt + new tokens would exceed it, generation goes on
    in windows: once the context is full, the last ``context // 2`` tokens of each row are fed again as a
    fresh prompt (positions restart at 0, as nanoGPT's cropping does). None: no windowing (the session
    raises ValueError when its cache is full). ``compile``: one-token steps compiled (the model's
    ``start_decoding(compile=True)``; the same tokens, faster once compiled)."""
    rows = _prompt_rows(tokenizer, prompts, context)
    with frozen_weights():  # the weights' derived copies are made once for every window
        new = _generate_windows(model, rows, cfg, device, context, compile=compile)
    return [tokenizer.decode(r) for r in new]


# on_text(row, piece, finished): a piece of row's new text, as soon as it decodes to whole characters;
# ``finished`` marks the row's last call.
TextCallback = Callable[[int, str, bool], None]


def stream_text(
    model: PromptedModel, tokenizer: TextCodec, prompts: list[str | list[int]], cfg: GenerationConfig,
    on_text: TextCallback, device: torch.device | str = "cpu", context: int | None = None, compile: bool = False,
) -> None:
    """:func:`generate_text`, streamed: the same tokens, and the same text in pieces given to ``on_text``
    as they are generated (:class:`~attnkit.decoding.textstream.TextStream`). Keeps only the last
    ``context`` tokens of each row, so memory does not grow with ``max_new_tokens``."""
    rows = _prompt_rows(tokenizer, prompts, context)
    streams = [TextStream(tokenizer.decode) for _ in rows]
    stops = set(cfg.stop_tokens)

    def on_tokens(pairs: list[tuple[int, int]]) -> None:
        for row, token in pairs:
            stream = streams[row]
            piece = stream.push(token)
            if token in stops:
                on_text(row, piece + stream.flush(), True)
                stream.finished = True
            elif piece:
                on_text(row, piece, False)

    with frozen_weights():
        _generate_windows(model, rows, cfg, device, context, on_tokens=on_tokens, keep_all=False, compile=compile)
    for row, stream in enumerate(streams):
        if not stream.finished:
            on_text(row, stream.flush(), True)


def _generate_windows(model: PromptedModel, rows: list[list[int]], cfg: GenerationConfig,
                      device: torch.device | str, context: int | None,
                      on_tokens: Callable[[list[tuple[int, int]]], None] | None = None,
                      keep_all: bool = True, compile: bool = False) -> list[list[int]]:
    """generate_text's loop over context windows: the new token ids of each row (with ``keep_all`` False,
    only their last ``context``). ``on_tokens``: called after every step with the (row, token) pairs
    emitted, rows numbered as in ``rows``."""
    new: list[list[int]] = [[] for _ in rows]
    count = [0] * len(rows)  # new tokens of each row (len(new[i]) unless trimmed)
    active = list(range(len(rows)))
    chunk = 0
    while active and count[active[0]] < cfg.max_new_tokens:
        keep = None if chunk == 0 or context is None else context // 2
        feed = [(rows[i] + new[i])[-keep if keep else 0 :] for i in active]
        ids, mask = left_pad(feed, cfg.pad_id)
        room = cfg.max_new_tokens - count[active[0]]
        if context is not None:
            room = min(room, context - ids.shape[1])
        step_cfg = replace(cfg, max_new_tokens=room, seed=None if cfg.seed is None else cfg.seed + chunk)
        extra = {"compile": True} if compile else {}  # (models without compiled steps take no such argument)
        session = model.start_decoding(prompt_mask=mask.to(device), max_len=ids.shape[1] + room, **extra)
        report = None if on_tokens is None else _reporter(active, on_tokens)
        out = generate(session, ids.to(device), step_cfg, on_step=report).tolist()
        still = []
        for i, row in zip(active, out, strict=True):
            stop = next((j for j, tok in enumerate(row) if tok in cfg.stop_tokens), None)
            got = row if stop is None else row[: stop + 1]
            new[i] += got
            count[i] += len(got)
            if not keep_all and context is not None:
                new[i] = new[i][-context:]
            if stop is None and len(row) == room:
                still.append(i)
        active, chunk = still, chunk + 1
        if context is None:
            break
    return new


def _reporter(active: list[int], on_tokens: Callable[[list[tuple[int, int]]], None]) -> StepCallback:
    """A StepCallback for one window: session row r is row ``active[r]``."""

    def report(tokens: Tensor, emitted: Tensor) -> None:
        idx = emitted.nonzero().squeeze(1).tolist()
        on_tokens([(active[r], t) for r, t in zip(idx, tokens[idx].tolist(), strict=True)])

    return report
