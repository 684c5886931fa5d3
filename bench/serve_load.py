"""Load on ``attnkit serve`` (loopback only, bounded in time and count): 1, 8, 32 and 128 concurrent
clients against a translation run and a GPT run, each with dynamic batching and with ``--no-batching``
(one request at a time): throughput, p50/p95/p99 latency, errors by status, the server's RSS at the
start and end of each level, the mean batch (requests per translation batch, rows per generation step),
and the gain of batching over one-at-a-time.

    flock /tmp/attnkit-heavy.lock nice -n 0 .venv/bin/python bench/serve_load.py --keep /tmp/serve-bench-runs \
        --profile 5 --duration 60 --clients 8,32 --gpt-clients 32 --sigterm 32 --out docs/serve-load.json

Without ``--translate`` / ``--gpt`` it trains two small runs first (under ``--keep`` or a temporary folder,
about a minute of CPU): the dates translation run of the server tests and a character GPT with a 64-token
context. Each client sends its next request when the previous one is answered (closed loop); a level ends
after ``--duration`` seconds or ``--max-requests`` requests. ``--profile S`` first times the translation
engine alone (batch 1, 8, 32) and the HTTP path alone (``GET /health``). ``--sigterm N`` then sends SIGTERM
to a fresh batching server under N clients: every request in flight must get its full answer (== decoding
alone in this process), beside the server's own count of requests read and answered. Results: a table on
stdout and ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from _serve import QUIET, ServerProcess, _sentences, _train  # noqa: E402  (tests/serve/_serve.py)

from attnkit.data.dates import dates_corpus  # noqa: E402
from attnkit.tasks.runs import open_run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import interleaved, timed  # noqa: E402

PROMPTS = ["the dog", "a small", "the cat runs", "big red", "on the", "the man", "a child", "green tree"]


def train_runs(tmp: Path) -> dict[str, Path]:
    """A dates translation run (tiny preset, 300 steps) and a character GPT (tiny, 64-token context); reused
    when ``tmp`` holds them already."""
    if (tmp / "gpt" / "run.json").is_file() and (tmp / "translate" / "run.json").is_file():
        return {"translate": tmp / "translate", "gpt": tmp / "gpt"}
    data = tmp / "parallel"
    data.mkdir(parents=True, exist_ok=True)
    c = dates_corpus(2000, seed=0)
    (data / "train.words").write_text("".join(s + "\n" for s in c.src))
    (data / "train.iso").write_text("".join(s + "\n" for s in c.tgt))
    fast = ["--warmup", "30", "--lr", "0.003", *QUIET]
    _train(["translate", "train", "--data", str(data), "--src", "words", "--tgt", "iso", "--out",
            str(tmp / "translate"), "--preset", "tiny", "--vocab-size", "120", "--max-tokens", "2000",
            "--max-len", "48", "--steps", "300", "--val-bleu-n", "0", *fast])
    text = tmp / "text.txt"
    text.write_text("".join(s + ".\n" for s in _sentences(2000)), encoding="utf-8")
    _train(["lm", "train", "--text", str(text), "--out", str(tmp / "gpt"), "--tokenizer", "char", "--preset", "tiny",
            "--block-size", "64", "--batch-size", "16", "--steps", "200", *fast])
    return {"translate": tmp / "translate", "gpt": tmp / "gpt"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_body(kind: str, rng: random.Random, sources: list[str], new_tokens: int) -> tuple[str, dict]:
    if kind == "health":
        return "/health", {}
    if kind == "translate":
        return "/v1/translate", {"model": "translate", "texts": [rng.choice(sources)]}
    return "/v1/generate", {"model": "gpt", "prompt": rng.choice(PROMPTS), "max_new_tokens": new_tokens,
                            "temperature": 0.8, "seed": rng.randrange(1 << 30)}


async def level(url: str, kind: str, clients: int, duration: float, max_requests: int, sources: list[str],
                new_tokens: int) -> dict:
    """``clients`` closed-loop clients for ``duration`` s (or ``max_requests`` requests in all)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    tokens = 0
    sent = 0
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, sent
        rng = random.Random(seed)
        while time.monotonic() < deadline and sent < max_requests:
            sent += 1
            path, body = request_body(kind, rng, sources, new_tokens)
            start = time.monotonic()
            try:
                answer = await (http.get(path) if kind == "health" else http.post(path, json=body))
                status = str(answer.status_code)
                if answer.status_code == 200:
                    latencies.append(time.monotonic() - start)
                    tokens += answer.json().get("tokens", 0) if kind == "gpt" else 0
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            statuses[status] = statuses.get(status, 0) + 1

    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    elapsed = time.monotonic() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {"clients": clients, "seconds": round(elapsed, 2), "ok": len(latencies),
            "errors": {s: n for s, n in statuses.items() if s != "200"},
            "requests_per_s": round(len(latencies) / elapsed, 2), "tokens_per_s": round(tokens / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--translate", type=Path, help="a translation run (default: train one)")
    p.add_argument("--gpt", type=Path, help="a GPT run (default: train one)")
    p.add_argument("--clients", default="1,8,32,128")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per level (15)")
    p.add_argument("--max-requests", type=int, default=20000, help="requests per level at most")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens per generation request (32)")
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads (2)")
    p.add_argument("--gpt-clients", help="levels of the GPT (default: --clients)")
    p.add_argument("--models", default="translate,gpt", help="which of the two to load (default: both)")
    p.add_argument("--batch-wait-ms", type=float, help="the batching server's --batch-wait-ms (default: its own)")
    p.add_argument("--sigterm", type=int, default=0, metavar="CLIENTS", help="after the levels, SIGTERM the batching "
                   "server under this many clients; every request in flight at the signal must get its full answer")
    p.add_argument("--keep", type=Path, help="train the runs into this folder, or reuse them from it")
    p.add_argument("--profile", type=float, default=0, metavar="SECONDS", help="first profile translation: the "
                   "engine alone at batch 1/8/32, the HTTP path alone (GET /health), and 32 clients with batching "
                   "and without, for this many seconds each")
    p.add_argument("--sources", type=Path, help="translation requests' texts, one per line (default: the dates "
                   "demo's; with a de->en run, e.g. Multi30k test_2016_flickr.de unzipped)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    gpt_levels = [int(c) for c in (args.gpt_clients or args.clients).split(",")]
    print_machine()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        runs = {"translate": args.translate, "gpt": args.gpt}
        if None in runs.values():
            trained = train_runs(args.keep or Path(tmp))
            runs = {k: v or trained[k] for k, v in runs.items()}
        sources = (args.sources.read_text(encoding="utf-8").splitlines() if args.sources
                   else dates_corpus(500, seed=7).src)
        if args.profile:
            profile(runs["translate"], sources, args.threads, args.profile)
        results: list[dict] = []
        stopped: list[dict] = []
        for kind in args.models.split(","):
            for mode in ("batching", "one-at-a-time"):
                flags = ["--threads", str(args.threads), "--max-new-tokens", str(args.new_tokens)]
                if mode == "one-at-a-time":
                    flags.append("--no-batching")
                elif args.batch_wait_ms is not None:
                    flags += ["--batch-wait-ms", str(args.batch_wait_ms)]
                server = ServerProcess({kind: runs[kind]}, *flags)
                try:
                    asyncio.run(level(server.url, kind, 4, 2.0, 200, sources, args.new_tokens))  # warm up
                    for clients in levels if kind == "translate" else gpt_levels:
                        rss0, batches0 = rss_mb(server.proc.pid), batch_counts(server, kind)
                        row = asyncio.run(level(server.url, kind, clients, args.duration, args.max_requests, sources,
                                                args.new_tokens))
                        (n0, b0), (n1, b1) = batches0, batch_counts(server, kind)
                        row.update(model=kind, mode=mode, rss_start_mb=round(rss0, 1),
                                   rss_end_mb=round(rss_mb(server.proc.pid), 1),
                                   mean_batch=round((n1 - n0) / (b1 - b0), 2) if b1 > b0 else None)
                        results.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    code = server.stop()
                    if code != 0:
                        print(f"server exited {code}: {''.join(server.stderr)[-2000:]}", file=sys.stderr)
            if args.sigterm:  # a fresh server, so that its own count of requests is this run's
                server = ServerProcess({kind: runs[kind]}, "--threads", str(args.threads), "--max-new-tokens",
                                       str(args.new_tokens))
                stop = asyncio.run(under_sigterm(server, kind, args.sigterm, 5.0, sources, args.new_tokens))
                stopped.append(check_answers(stop, runs[kind], kind, server_counts(server)))
                print(json.dumps(stopped[-1]), flush=True)
    report(results)
    for row in stopped:
        print(f"SIGTERM under {row['clients']} clients ({row['model']}): {row['in_flight']} requests in flight at "
              f"the signal ({row['statuses']}), {row['full_answers']} full answers equal to decoding alone; the "
              f"server read {row['server_received']} requests and answered {row['server_answered']}, the clients "
              f"got {row['client_answers']} answers (+1 start-up /health); exit status {row['exit_status']} "
              f"{row['exit_s']} s after the signal")
    if args.out:
        args.out.write_text(json.dumps({"duration_s": args.duration, "new_tokens": args.new_tokens,
                                        "threads": args.threads, "results": results, "sigterm": stopped},
                                       indent=1) + "\n")
    return 0


def print_machine() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    shown = [f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")]
    print(f"CPU: {cpu}; {os.cpu_count()} cores; flags: {' '.join(shown)}; load average: {os.getloadavg()}", flush=True)


def batch_counts(server: ServerProcess, kind: str) -> tuple[float, float]:
    """(requests or rows, batches or steps) the server has run for this model."""
    labels = {"model": kind, "kind": "translate" if kind == "translate" else "generate"}
    return (server.metric("attnkit_batch_requests_sum", **labels),
            server.metric("attnkit_batch_requests_count", **labels))


async def under_sigterm(server: ServerProcess, kind: str, clients: int, after_s: float, sources: list[str],
                        new_tokens: int) -> dict:
    """``clients`` closed-loop clients; after ``after_s`` s SIGTERM, and the clients send nothing new. Every
    request: (sent before the signal, answered after it, status, body, the request)."""
    signalled: list[float] = []
    done: list[tuple[float, float, str, Any, dict]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(1000 + seed)
        while not signalled:
            path, body = request_body(kind, rng, sources, new_tokens)
            start = time.monotonic()
            try:
                answer = await http.post(path, json=body)
                status, content = str(answer.status_code), answer.json() if answer.status_code == 200 else answer.text
            except (httpx.HTTPError, ValueError) as exc:  # no answer, or a cut one
                status, content = type(exc).__name__, None
            done.append((start, time.monotonic(), status, content, body))

    async def signal_later() -> None:
        await asyncio.sleep(after_s)
        signalled.append(time.monotonic())
        server.proc.terminate()

    async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as http:
        await asyncio.gather(signal_later(), *(client(i, http) for i in range(clients)))
    code = await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 120)
    t = signalled[0]
    return {"clients": clients, "signal": t, "exit_status": code, "exit_s": round(time.monotonic() - t, 2),
            "requests": done}


def server_counts(server: ServerProcess) -> tuple[int, int]:
    """(requests received, answered) that the server printed when it stopped."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in server.stderr:
            if " requests received, " in line:
                words = line.split()
                return int(words[2]), int(words[5])
        time.sleep(0.1)
    return -1, -1


def check_answers(stop: dict, run_dir: Path, kind: str, counts: tuple[int, int]) -> dict:
    """The requests in flight at the signal (sent before, answered after) and how many got a full answer
    equal to the same request decoded alone in this process; the server's own count of the requests it read
    and answered (its start-up /health check included), beside the answers the clients got. A request that
    got no answer was one the server never read (sent on a keep-alive connection as the server closed it)
    when the server's counts agree: read == answered == the clients' answers + 1."""
    run = open_run(run_dir)
    t = stop["signal"]
    in_flight = [r for r in stop["requests"] if r[0] < t <= r[1]]
    full = 0
    for _, _, status, content, body in in_flight:
        if status != "200":
            continue
        if kind == "translate":
            full += content["translations"][0]["text"] == run.translate(body["texts"])[0]
        else:
            full += content["text"] == run.inference.generate(body["prompt"], max_new_tokens=body["max_new_tokens"],
                                                             temperature=body["temperature"], seed=body["seed"])[0]
    statuses: dict[str, int] = {}
    for _, _, status, _, _ in in_flight:
        statuses[status] = statuses.get(status, 0) + 1
    answers = sum(r[2].isdigit() for r in stop["requests"])
    return {"model": kind, "clients": stop["clients"], "requests": len(stop["requests"]), "client_answers": answers,
            "server_received": counts[0], "server_answered": counts[1], "in_flight": len(in_flight),
            "statuses": statuses, "full_answers": full, "refused_after": sum(r[0] >= t for r in stop["requests"]),
            "exit_status": stop["exit_status"], "exit_s": stop["exit_s"]}


def profile(run_dir: Path, sources: list[str], threads: int, duration: float) -> None:
    """Where a translation request's time goes on these cores: the engine alone (``translate_ids`` on 1, 8
    and 32 sentences, ms per sentence, 7 interleaved repeats), the HTTP path alone (GET /health, 32
    clients), and 32 clients translating with batching and without (requests/s, mean batch)."""
    torch.set_num_threads(threads)
    tr = open_run(run_dir).inference
    ids = [s for s in tr.src_tok.encode_batch(sources) if len(s) < tr.max_len][:32]
    together = tr.translate_ids(ids)
    alone = [tr.translate_ids([s])[0] for s in ids]
    print(f"engine: batch of 32 == one at a time: {together == alone}", flush=True)
    times = interleaved({n: timed(lambda n=n: tr.translate_ids(ids[:n])) for n in (1, 8, 32)}, 7)
    for n, ts in times.items():
        per = [1000 * t / n for t in ts]
        print(f"engine: batch {n}: ms per sentence {[round(x, 2) for x in per]} median {statistics.median(per):.2f}",
              flush=True)
    for flags in ([], ["--no-batching"]):
        server = ServerProcess({"translate": run_dir}, "--threads", str(threads), *flags)
        try:
            for kind in ("health", "translate"):
                asyncio.run(level(server.url, kind, 4, 2.0, 200, sources, 0))  # warm up
                b0 = batch_counts(server, "translate")
                row = asyncio.run(level(server.url, kind, 32, duration, 20000, sources, 0))
                b1 = batch_counts(server, "translate")
                mean = (b1[0] - b0[0]) / (b1[1] - b0[1]) if b1[1] > b0[1] else None
                print(f"http {' '.join(flags) or 'batching'}: {kind} x 32 clients: {row['requests_per_s']} req/s, "
                      f"p50 {row['p50_ms']} ms, mean batch {mean}, errors {row['errors']}", flush=True)
        finally:
            server.stop()


def report(results: list[dict]) -> None:
    print("\n| model | mode | clients | req/s | tokens/s | p50 ms | p95 ms | p99 ms | errors | RSS MB start -> end |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['model']} | {r['mode']} | {r['clients']} | {r['requests_per_s']} | {r['tokens_per_s']} | "
              f"{r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} | {sum(r['errors'].values())} | "
              f"{r['rss_start_mb']} -> {r['rss_end_mb']} |")
    print("\n| model | clients | gain of batching (req/s batched / one at a time) |")
    print("| --- | --- | --- |")
    for r in results:
        if r["mode"] != "batching":
            continue
        base = next(b for b in results if b["model"] == r["model"] and b["clients"] == r["clients"]
                    and b["mode"] == "one-at-a-time")
        gain = r["requests_per_s"] / base["requests_per_s"] if base["requests_per_s"] else float("nan")
        print(f"| {r['model']} | {r['clients']} | {gain:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
