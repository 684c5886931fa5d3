"""A loaded model as the server sees it: what it can do, how a request becomes work (``prepare_*``, on the
event loop: tokenize, check the limits) and how a batch of that work runs (``run_batch``, on the model's
worker thread), each through the family's own inference object of :func:`attnkit.tasks.runs.open_run`
(Translator, Generator, Embedder, Classifier) and the viewer's collectors (:mod:`attnkit.viz.load`), so
that a request answered in a batch gets what that object gives it alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnkit.decoding.generate import GenerationConfig
from attnkit.decoding.options import DecodeOptions
from attnkit.errors import InputError
from attnkit.serve.continuous import ContinuousGenerator, GenerationJob, resolve_seed
from attnkit.serve.limits import BatchConfig, Limits
from attnkit.serve.schemas import (
    AttentionRequest,
    ClassifyRequest,
    EmbedRequest,
    GenerateRequest,
    TranslateRequest,
)
from attnkit.tasks.lm import ChatGenerator
from attnkit.tasks.runs import CAPABILITIES, Run
from attnkit.viz.html import viewer_html
from attnkit.viz.load import VIEWS, Viewable, attention_maps, translation_maps
from attnkit.viz.weights import KIND_TITLES, AttentionMaps

DEFAULT_NEW_TOKENS = 64


@dataclass
class Work:
    """A request turned into work: ``payload`` for run_batch; requests of the same ``kind`` and ``key`` may
    share a batch; ``texts`` and ``tokens`` count towards a batch's limits."""

    kind: str
    payload: Any
    key: tuple = ()
    texts: int = 1
    tokens: int = 0


class Served:
    """One model of the server: its name, Run and, for GPT models, the continuous generation batch."""

    def __init__(self, name: str, run: Run, batch: BatchConfig) -> None:
        self.name, self.run = name, run
        self.capabilities = [c for c in CAPABILITIES if run.can(c)]
        if run.family in VIEWS:
            self.capabilities.append("attention")
        self.engine = None
        if run.can("generate"):
            self.engine = ContinuousGenerator(run.inference, batch.max_rows if batch.enabled else 1,
                                              batch.continuous)

    # ------------------------------------------------------------------------------------- description
    @property
    def max_tokens(self) -> int | None:
        """Tokens of one input (a source text, prompt, or text to embed / classify) the model takes."""
        inf = self.run.inference
        if self.run.can("translate"):
            return inf.max_len
        if self.run.can("generate"):
            return inf.model.config.max_len
        if self.run.can("classify"):
            return inf.max_length
        if self.run.can("embed"):
            return inf.max_positions
        return None

    def need(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise Incapable(f"model {self.name!r} ({self.run.family}) cannot {capability}; it can: "
                            f"{', '.join(self.capabilities) or 'nothing'}")

    def _check_lengths(self, lengths: Sequence[int], what: str = "text", limit: int | None = None) -> None:
        limit = limit or self.max_tokens
        for i, n in enumerate(lengths):
            if limit is not None and n > limit:
                where = what if len(lengths) == 1 and what != "text" else f"{what} {i}"
                raise InputError(f"{where} has {n} tokens; model {self.name!r} takes at most {limit}")

    # ------------------------------------------------------------------------------------------ prepare
    def prepare_translate(self, req: TranslateRequest, limits: Limits) -> Work:
        self.need("translate")
        _check_texts(req.texts, limits)
        if req.beam_size > limits.max_beam:
            raise InputError(f"beam_size {req.beam_size} is over this server's limit of {limits.max_beam}")
        if req.n_best is not None and req.n_best > req.beam_size:
            raise InputError(f"n_best {req.n_best} is over beam_size {req.beam_size}: the beam holds the "
                             "hypotheses ranked")
        ids = self.run.inference.src_tok.encode_batch(req.texts)
        self._check_lengths([len(s) for s in ids])
        return Work("translate", (ids, req), (req.beam_size, req.length_penalty), len(ids),
                    sum(len(s) + 1 for s in ids) * req.beam_size)

    def prepare_generate(self, req: GenerateRequest, limits: Limits) -> Work:
        self.need("generate")
        _check_chars(req.prompt, "prompt", limits)
        for i, m in enumerate(req.messages or ()):
            _check_chars(m.content, f"content of message {i}", limits)
        max_new = min(DEFAULT_NEW_TOKENS, limits.max_new_tokens) if req.max_new_tokens is None else req.max_new_tokens
        if max_new > limits.max_new_tokens:
            raise InputError(f"max_new_tokens {max_new} is over this server's limit of {limits.max_new_tokens}")
        gen = self.run.inference
        prompt, ids = self._prompt(req)
        self._check_lengths([len(ids)], "the prompt")
        # The Generator's settings (its stop tokens); the schema has checked the options' ranges.
        cfg = GenerationConfig(max_new_tokens=max_new, temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                               seed=resolve_seed(req.seed), stop_tokens=gen.tokenizer.stop_ids)
        job = GenerationJob(ids, cfg, prompt=prompt)
        # Past the context, generation goes on in windows: alone, outside the continuous batch.
        kind = "generate" if self.engine.batchable(job) else "generate-alone"
        return Work(kind, job, (), 1, len(ids) + max_new)

    def _prompt(self, req: GenerateRequest) -> tuple[str, list[int]]:
        """(prompt text, ids) of a request: its prompt, or its chat under the checkpoint's chat template."""
        gen = self.run.inference
        if req.messages is None:
            return req.prompt, gen.prompt_ids(req.prompt)
        if req.prompt:
            raise InputError("send either a prompt or messages, not both")
        if not isinstance(gen, ChatGenerator):
            raise InputError(f"model {self.name!r} has no chat template (its checkpoint's tokenizer_config.json / "
                             "chat_template.jinja): send a prompt instead of messages")
        messages = [m.model_dump() for m in req.messages]
        return gen.tokenizer.render_chat(messages), gen.chat_ids(messages)

    def prepare_embed(self, req: EmbedRequest, limits: Limits) -> Work:
        self.need("embed")
        _check_texts(req.texts, limits)
        ids = self.run.inference.tokenizer.encode(req.texts).ids
        self._check_lengths([len(s) for s in ids], limit=self.run.inference.max_positions)
        return Work("embed", req, (req.normalize,), len(ids), sum(len(s) for s in ids))

    def prepare_classify(self, req: ClassifyRequest, limits: Limits) -> Work:
        self.need("classify")
        _check_texts(req.texts, limits)
        ids = self.run.inference.tokenizer.encode(req.texts).ids
        self._check_lengths([len(s) for s in ids])
        return Work("classify", ids, (), len(ids), sum(len(s) for s in ids))

    def prepare_attention(self, req: AttentionRequest, limits: Limits) -> Work:
        self.need("attention")
        _check_chars(req.text, "text", limits)
        if req.target is not None:
            _check_chars(req.target, "target", limits)
        return Work("attention", req, ("alone", id(req)), 1, 0)

    # ---------------------------------------------------------------------------------------------- run
    def run_batch(self, kind: str, payloads: list[Any], limits: Limits) -> list[Any]:
        """The results of a batch of ``payloads`` of one kind and key, in order (worker thread)."""
        if kind == "translate":
            return self._translate(payloads)
        if kind == "embed":
            return self._embed(payloads)
        if kind == "classify":
            return self._classify(payloads)
        if kind == "attention":
            return [self._attention(p, limits) for p in payloads]
        if kind == "generate-alone":
            return [self.engine.run_alone(p) for p in payloads]
        raise ValueError(f"unknown kind of work {kind!r}")

    def _translate(self, payloads: list[tuple[list[list[int]], TranslateRequest]]) -> list[dict]:
        translator = self.run.inference
        req0 = payloads[0][1]
        ids = [s for p in payloads for s in p[0]]
        # The batch shares beam_size and length_penalty (the work's key); n-best lists are cut from the beam's
        # ranked hypotheses, so the batch asks for the longest any request wants and each takes its own.
        n_best = max(req.n_best or 1 for _, req in payloads)
        options = DecodeOptions(beam_size=req0.beam_size, length_penalty=req0.length_penalty, n_best=n_best)
        hyps: list = [[] for _ in ids]
        out_ids = translator.translate_ids(ids, options=options, nbest=hyps)
        texts = translator.tgt_tok.decode_batch(out_ids)
        out, start = [], 0
        for src_ids, req in payloads:
            rows = range(start, start + len(src_ids))
            start += len(src_ids)
            out.append({"model": self.name, "translations": [
                {"text": texts[i], "alignment": self._alignment(ids[i], out_ids[i]) if req.alignments else None,
                 "hypotheses": None if req.n_best is None else self._hypotheses(hyps[i][: req.n_best])}
                for i in rows]})
        return out

    def _hypotheses(self, hyps: list[tuple[float, list[int]]]) -> list[dict]:
        """[(score, ids), ...] as JSON; greedy decoding's score (nan: it ranks nothing) as null. An empty
        source has none (it is not decoded: its translation is the empty text), as in Translator.translate."""
        decode = self.run.inference.tgt_tok.decode
        return [{"text": decode(h), "score": None if math.isnan(score) else score} for score, h in hyps]

    def _alignment(self, src: list[int], tgt: list[int]) -> dict | None:
        """For each target token, the source token it attends to most: the viewer's encoder-decoder weights
        of the last layer, averaged over heads (None for an empty source)."""
        if not src:
            return None
        cross = translation_maps(self.view(), src, tgt).get("cross")
        w = cross.weights[-1].mean(0)  # (T + 1, S): query t reads y_t (y_0 = BOS) and predicts y_t+1
        return {"source_tokens": cross.keys, "target_tokens": cross.queries[1:],
                "links": w[:-1].argmax(-1).tolist()}

    def _embed(self, reqs: list[EmbedRequest]) -> list[dict]:
        texts = [t for r in reqs for t in r.texts]
        emb = self.run.inference.embed(texts, normalize=reqs[0].normalize)
        out, start = [], 0
        for r in reqs:
            n = len(r.texts)
            vectors = emb.vectors[start : start + n]
            unknown = [i - start for i in emb.unknown if start <= i < start + n]
            out.append({"model": self.name, "dim": int(vectors.shape[1]), "vectors": vectors.tolist(),
                        "unknown": unknown})
            start += n
        return out

    def _classify(self, payloads: list[list[list[int]]]) -> list[dict]:
        results = self.run.inference.classify_ids([s for p in payloads for s in p])
        out, start = [], 0
        for p in payloads:
            out.append({"model": self.name, "results": [{"label": lab, "probability": prob}
                                                        for lab, prob in results[start : start + len(p)]]})
            start += len(p)
        return out

    def view(self) -> Viewable:
        run = self.run
        family = VIEWS[run.family]
        return Viewable(family, run.model, run.tokenizer, run.inference if family == "translation" else None)

    def _attention(self, req: AttentionRequest, limits: Limits) -> dict:
        maps = attention_maps(self.view(), req.text, req.target, max_tokens=limits.max_attention_tokens)
        return {"model": self.name, "title": f"{maps.model} attention", "maps": maps_json(maps),
                "html": viewer_html(maps) if req.html else None}


def maps_json(maps: AttentionMaps) -> list[dict]:
    """The weights of every kind, rounded to 4 decimals (what a viewer can show)."""
    return [{"kind": m.kind, "title": KIND_TITLES[m.kind], "queries": m.queries, "keys": m.keys,
             "weights": (torch.round(m.weights.float() * 1e4) / 1e4).tolist()} for m in maps.maps]


class Incapable(InputError):
    """The model exists but cannot do what was asked (a GPT asked to translate)."""


def _check_chars(text: str, what: str, limits: Limits) -> None:
    if len(text) > limits.max_chars:
        raise InputError(f"the {what} has {len(text)} characters; this server takes at most {limits.max_chars}")


def _check_texts(texts: Sequence[str], limits: Limits) -> None:
    if len(texts) > limits.max_texts:
        raise InputError(f"{len(texts)} texts; this server takes at most {limits.max_texts} per request")
    for i, t in enumerate(texts):
        if len(t) > limits.max_chars:
            raise InputError(f"text {i} has {len(t)} characters; this server takes at most {limits.max_chars}")
