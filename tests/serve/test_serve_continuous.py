"""Continuous batching of GPT generation, in this process: requests joining a running batch at different
steps and leaving it when done get the tokens they get decoded alone (Generator.generate: greedy, and
sampling with the same seed), and restacking a session's rows changes none of their next-token logits."""

from __future__ import annotations

import pytest
import torch

from attnkit.decoding.generate import GenerationConfig, left_pad
from attnkit.derived import frozen_weights
from attnkit.serve.continuous import ContinuousGenerator, GenerationJob, restack
from attnkit.tasks.runs import Run

PROMPTS = ["the dog", "a", "small red house", "the cat runs on", "", "big", "tree park", "on the"]
SETTINGS = [dict(temperature=0.0), dict(temperature=0.9, seed=3), dict(temperature=1.2, top_k=5, seed=7),
            dict(temperature=0.7, top_p=0.9, seed=11)]


def _cases() -> list[tuple[str, int, dict]]:
    return [(p, [3, 8, 5, 12][(i + j) % 4], s) for i, p in enumerate(PROMPTS) for j, s in enumerate(SETTINGS)]


def _job(run: Run, prompt: str, max_new: int, settings: dict) -> GenerationJob:
    eos = run.tokenizer.eos_id
    cfg = GenerationConfig(max_new_tokens=max_new, temperature=settings["temperature"], top_k=settings.get("top_k"),
                           top_p=settings.get("top_p"), seed=settings.get("seed", 0),
                           stop_tokens=(eos,) if eos is not None else ())
    return GenerationJob(run.inference.prompt_ids(prompt), cfg)


@pytest.mark.parametrize("name", ["lm", "lm_bpe"])
def test_rows_joining_and_leaving_get_what_they_get_alone(local: dict[str, Run], name: str) -> None:
    run = local[name]
    cases = _cases()
    want = [run.inference.generate(p, max_new_tokens=m, **s)[0] for p, m, s in cases]
    engine = ContinuousGenerator(run.inference, max_rows=6)
    waiting = [(k, _job(run, *case)) for k, case in enumerate(cases)]
    got: dict[int, str] = {}
    joined_running = steps = 0
    with torch.inference_mode(), frozen_weights():
        for k, job in [w for w in waiting if not engine.batchable(w[1])]:
            got[k] = engine.run_alone(job).text
        waiting = [w for w in waiting if engine.batchable(w[1])]
        while waiting or engine.active:
            joining = []
            # Join every other step (and whenever the batch is empty): rows start at different steps.
            while waiting and (steps % 2 == 0 or not engine.active) and engine.fits([j for _, j in joining] +
                                                                                    [waiting[0][1]]):
                joining.append(waiting.pop(0))
            if joining:
                joined_running += engine.active > 0
                engine.admit([j for _, j in joining],
                             [lambda g, k=k: got.__setitem__(k, g.text) for k, _ in joining])
            engine.step()
            steps += 1
    assert joined_running > 3, "requests should have joined a running batch"
    assert [got[k] for k in range(len(cases))] == want


def test_restack_keeps_every_rows_next_logits(local: dict[str, Run]) -> None:
    run = local["lm"]
    model, tok = run.model, run.tokenizer
    rows = [tok.encode(p) for p in ("the dog runs", "a", "small red")]
    with torch.inference_mode():
        ids, mask = left_pad(rows)
        a = model.start_decoding(prompt_mask=mask, max_len=model.config.max_len)
        a.step_last(ids)
        b = model.start_decoding(max_len=model.config.max_len)
        b.step_last(torch.tensor([tok.encode("tree")]))
        step_a = torch.tensor([[tok.encode("e")[0]]] * 3)
        step_b = torch.tensor([[tok.encode("s")[0]]])
        keep = torch.tensor([0, 2])
        merged = restack(model, [(a, keep), (b, torch.tensor([0]))], model.config.max_len)
        assert merged.length == len(rows[0])  # row 1 ("a") left: its padding columns are gone
        got = merged.step_last(torch.cat([step_a[keep], step_b]))
        want = torch.cat([a.step_last(step_a)[keep], b.step_last(step_b)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
