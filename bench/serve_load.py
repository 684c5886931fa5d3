"""Load on ``attnkit serve`` (loopback only, bounded in time and count): 1, 8, 32 and 128 concurrent
clients against a translation run and a GPT run, each with dynamic batching and with ``--no-batching``
(one request at a time): throughput, p50/p95/p99 latency, errors by status, the server's RSS at the
start and end of each level, and the gain of batching over one-at-a-time.

    .venv/bin/python bench/serve_load.py --duration 15 --out docs/serve-load.json

Without ``--translate`` / ``--gpt`` it trains two small runs first (under a temporary folder, about a
minute of CPU): the dates translation run of the server tests and a character GPT with a 64-token context.
Each client sends its next request when the previous one is answered (closed loop); a level ends after
``--duration`` seconds or ``--max-requests`` requests. Results: a table on stdout and ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from _serve import QUIET, ServerProcess, _sentences, _train  # noqa: E402  (tests/serve/_serve.py)

from attnkit.data.dates import dates_corpus  # noqa: E402

PROMPTS = ["the dog", "a small", "the cat runs", "big red", "on the", "the man", "a child", "green tree"]


def train_runs(tmp: Path) -> dict[str, Path]:
    """A dates translation run (tiny preset, 300 steps) and a character GPT (tiny, 64-token context)."""
    data = tmp / "parallel"
    data.mkdir()
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
                answer = await http.post(path, json=body)
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
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        runs = {"translate": args.translate, "gpt": args.gpt}
        if None in runs.values():
            trained = train_runs(Path(tmp))
            runs = {k: v or trained[k] for k, v in runs.items()}
        sources = dates_corpus(500, seed=7).src
        results = []
        for kind in ("translate", "gpt"):
            for mode in ("batching", "one-at-a-time"):
                flags = ["--threads", str(args.threads), "--max-new-tokens", str(args.new_tokens)]
                if mode == "one-at-a-time":
                    flags.append("--no-batching")
                server = ServerProcess({kind: runs[kind]}, *flags)
                try:
                    asyncio.run(level(server.url, kind, 4, 2.0, 200, sources, args.new_tokens))  # warm up
                    for clients in levels:
                        rss0 = rss_mb(server.proc.pid)
                        row = asyncio.run(level(server.url, kind, clients, args.duration, args.max_requests, sources,
                                                args.new_tokens))
                        row.update(model=kind, mode=mode, rss_start_mb=round(rss0, 1),
                                   rss_end_mb=round(rss_mb(server.proc.pid), 1))
                        results.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    code = server.stop()
                    if code != 0:
                        print(f"server exited {code}: {''.join(server.stderr)[-2000:]}", file=sys.stderr)
    report(results)
    if args.out:
        args.out.write_text(json.dumps({"duration_s": args.duration, "new_tokens": args.new_tokens,
                                        "threads": args.threads, "results": results}, indent=1) + "\n")
    return 0


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
