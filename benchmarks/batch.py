"""Synchronous vs batch: the same documents through the real SDK, priced and timed.

The documents are the bundled examples' text ones (HTML, Markdown, plain text), repeated
to N. The synchronous run meets hidden limits shaped like Anthropic's Tier 1 (50
requests, 50,000 input tokens and 10,000 output tokens per minute; the request bucket
holds one second, as "60 RPM may be enforced as 1 request per second"); the batch run
goes through the Message Batches endpoints, which take no part in those limits, and
each batch is processed for a fixed delay. To keep the benchmark short, time is
compressed: every limit is ``--speedup`` times higher and the batch delay that many
times shorter, and the wall times are also shown multiplied back ("at Tier 1").
Cost is each request's reported usage at the model's published price (the batch at
its batch share): the ratio does not depend on the speedup.

    python benchmarks/batch.py --quick
    python benchmarks/batch.py
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package, which httpx
# imports: keep this folder off the path.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import random
import time
from pathlib import Path

import trio

from cardmill import Document, LimitKind, MemoryStorage
from cardmill.engine import BatchExecutor, Engine, RunSummary
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, check_invariants, lognormal

KEY = "fake-key-bench-batch"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIER1 = {"requests": 50.0, "input_tokens": 50_000.0, "output_tokens": 10_000.0}
#: How long the fake takes over a batch, at Tier 1 (the API promises "within 24 hours";
#: small batches often end within minutes).
BATCH_MINUTES = 5.0


def documents(n: int) -> list[Document]:
    sources = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".html", ".md", ".txt"))
    out = []
    for i in range(n):
        source = sources[i % len(sources)]
        # a line of its own makes each document distinct, as real ones are
        data = source.read_bytes() + f"\n\nCopy {i}.\n".encode()
        out.append(Document(f"{i:04d}-{source.name}", data, _media(source)))
    return out


def _media(path: Path) -> str:
    return {".html": "text/html", ".md": "text/markdown"}.get(path.suffix, "text/plain")


async def measure(n: int, speedup: float, *, batch: bool) -> tuple[RunSummary, float, int, int]:
    """One run: its summary, wall seconds, HTTP requests and 429s the server saw."""
    storage = MemoryStorage()
    run = await storage.create_run(documents(n))
    async with FakeAnthropicServer(
        latency=lognormal(0.4 / speedup, 0.3),
        requests_per_minute=TIER1["requests"] * speedup,
        input_tokens_per_minute=TIER1["input_tokens"] * speedup,
        output_tokens_per_minute=TIER1["output_tokens"] * speedup,
        burst_seconds={LimitKind.REQUESTS: 1.0},
        api_key=KEY,
        seed=7,
        batch_delay=BATCH_MINUTES * 60 / speedup,
    ) as server:
        async with AnthropicProvider(api_key=KEY, base_url=server.url) as provider:
            start = time.perf_counter()
            if batch:
                poll = BATCH_MINUTES * 60 / speedup / 10
                summary = await BatchExecutor(
                    storage,
                    provider,
                    poll_interval=poll,
                    max_poll_interval=poll,
                    rng=random.Random(1),
                ).execute(run.id)
            else:
                summary = await Engine(
                    storage, provider, concurrency=8, rng=random.Random(1)
                ).execute(run.id)
            elapsed = time.perf_counter() - start
        statuses = server.statuses()
    await check_invariants(storage, run.id)
    assert summary.run.completed_items == n, summary.run
    return summary, elapsed, len(statuses), statuses.count(429)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--docs", type=int, default=None)
    parser.add_argument("--speedup", type=float, default=None)
    args = parser.parse_args()
    n = args.docs or (24 if args.quick else 200)
    speedup = args.speedup or (300.0 if args.quick else 20.0)
    sync, sync_s, sync_requests, sync_429 = trio.run(partial_measure, n, speedup, False)
    batch, batch_s, batch_requests, batch_429 = trio.run(partial_measure, n, speedup, True)
    per_1000 = 1000 / n
    sync_cost, batch_cost = sync.run.cost_usd * per_1000, batch.run.cost_usd * per_1000
    print(f"{'documents':<36} {n} (the examples' text files, repeated)")
    print(
        f"{'hidden limits (sync)':<36} Tier 1 x {speedup:g}: 50 RPM, 50,000 ITPM, "
        f"10,000 OTPM; batch processed in {BATCH_MINUTES:g} min / {speedup:g}"
    )
    print(f"{'':<36} {'sync':>12} {'batch':>12}")
    print(f"{'cost per 1,000 documents (USD)':<36} {sync_cost:>12.4f} {batch_cost:>12.4f}")
    print(f"{'wall time (s)':<36} {sync_s:>12.2f} {batch_s:>12.2f}")
    print(
        f"{'  the same at Tier 1 (min)':<36} {sync_s * speedup / 60:>12.1f} "
        f"{batch_s * speedup / 60:>12.1f}"
    )
    print(f"{'HTTP requests':<36} {sync_requests:>12} {batch_requests:>12}")
    print(f"{'  answered 429':<36} {sync_429:>12} {batch_429:>12}")
    print(f"{'batch / sync cost':<36} {batch_cost / sync_cost:>12.3f}")
    print(
        json.dumps(
            {
                "benchmark": "batch",
                "documents": n,
                "speedup": speedup,
                "sync_cost_per_1000": round(sync_cost, 6),
                "batch_cost_per_1000": round(batch_cost, 6),
                "cost_ratio": round(batch_cost / sync_cost, 4),
                "sync_wall_s": round(sync_s, 3),
                "batch_wall_s": round(batch_s, 3),
                "sync_requests": sync_requests,
                "batch_requests": batch_requests,
                "sync_429": sync_429,
                "batch_429": batch_429,
            }
        )
    )


async def partial_measure(
    n: int, speedup: float, batch: bool
) -> tuple[RunSummary, float, int, int]:
    return await measure(n, speedup, batch=batch)


if __name__ == "__main__":
    main()
