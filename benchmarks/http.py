"""The real anthropic SDK over loopback HTTP: speedup from concurrency, goodput vs a limit.

FakeAnthropicServer answers on 127.0.0.1 after about 200 ms, as a fast model might;
AnthropicProvider talks to it through the official SDK, exactly as it would to the API.
The limit is strict, as providers may enforce one: its bucket holds one second of it.

    python benchmarks/http.py --quick
    python benchmarks/http.py
"""

from __future__ import annotations

import os
import sys

# This file is named http.py, as the benchmark is: keep it from shadowing the standard
# library's http package, which httpx imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import random
import time

import trio

from cardmill import Document, LimitKind, MemoryStorage
from cardmill.engine import Engine
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, lognormal

KEY = "fake-key-bench-http"


def docs(n: int) -> list[Document]:
    return [
        Document(f"doc{i:04d}.md", f"# Note {i}\n\nA short note, number {i}.\n".encode())
        for i in range(n)
    ]


async def timed_run(server: FakeAnthropicServer, n: int, concurrency: int) -> tuple[float, int]:
    storage = MemoryStorage()
    run = await storage.create_run(docs(n))
    async with AnthropicProvider(api_key=KEY, base_url=server.url) as provider:
        start = time.perf_counter()
        summary = await Engine(
            storage, provider, concurrency=concurrency, rng=random.Random(1)
        ).execute(run.id)
        elapsed = time.perf_counter() - start
    assert summary.run.completed_items == n, summary.run
    return elapsed, summary.requests


async def speedups(n: int) -> dict[int, float]:
    out: dict[int, float] = {}
    async with FakeAnthropicServer(latency=lognormal(0.2, 0.1), seed=1) as server:
        await timed_run(server, 2, 2)  # warm up: imports, connections
        for concurrency in (1, 2, 4):
            elapsed, _ = await timed_run(server, n, concurrency)
            out[concurrency] = elapsed
    return out


async def goodput(n: int, rpm: float, headers: bool) -> dict[str, float]:
    async with FakeAnthropicServer(
        latency=lognormal(0.2, 0.1),
        requests_per_minute=rpm,
        burst_seconds={LimitKind.REQUESTS: 1.0},
        headers=headers,
        seed=2,
    ) as server:
        elapsed, _ = await timed_run(server, n, 8)
        ok = [r.at for r in server.requests if r.status == 200]
        refused = [r.at for r in server.requests if r.status == 429]
    # Steady state: the middle of the run, after the start taught the limit.
    ok.sort()
    start, end = ok[len(ok) // 5], ok[int(len(ok) * 0.9)]
    inside = sum(1 for t in ok if start <= t <= end)
    refused_inside = sum(1 for t in refused if start <= t <= end)
    return {
        "goodput_ratio": (inside - 1) / (end - start) / (rpm / 60),
        "rate_limited_share": len(refused) / (len(ok) + len(refused)),
        "steady_429_share": refused_inside / (inside + refused_inside),
        "elapsed_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, limited_n, rpm = (16, 60, 480.0) if args.quick else (60, 600, 600.0)
    times = trio.run(speedups, n)
    limit = trio.run(goodput, limited_n, rpm, True)
    blind = trio.run(goodput, limited_n, rpm, False)
    print(f"{'uploads, ~200 ms each':<34} {n}")
    for concurrency, elapsed in times.items():
        print(f"{'concurrency ' + str(concurrency):<34} {elapsed:.2f} s")
    print(f"{'speedup at concurrency 2':<34} {times[1] / times[2]:.2f}x")
    print(f"{'speedup at concurrency 4':<34} {times[1] / times[4]:.2f}x")
    print(f"{'hidden limit':<34} {rpm:.0f} requests/min, a bucket of 1 s, {limited_n} uploads")
    print(f"{'goodput / hidden limit':<34} {limit['goodput_ratio']:.3f}")
    print(f"{'requests answered 429':<34} {limit['rate_limited_share']:.2%}")
    print(f"{'  in the steady state':<34} {limit['steady_429_share']:.2%}")
    print(f"{'  same, rate-limit headers off':<34} {blind['goodput_ratio']:.3f}")
    print(f"{'  429s, headers off':<34} {blind['rate_limited_share']:.2%}")
    print(f"{'  in the steady state':<34} {blind['steady_429_share']:.2%}")
    print(
        json.dumps(
            {
                "benchmark": "http",
                "speedup_c2": round(times[1] / times[2], 3),
                "speedup_c4": round(times[1] / times[4], 3),
                "goodput_ratio": round(limit["goodput_ratio"], 3),
                "rate_limited_share": round(limit["rate_limited_share"], 4),
                "goodput_ratio_no_headers": round(blind["goodput_ratio"], 3),
                "rate_limited_share_no_headers": round(blind["rate_limited_share"], 4),
                "steady_429_share": round(limit["steady_429_share"], 4),
                "steady_429_share_no_headers": round(blind["steady_429_share"], 4),
            }
        )
    )


if __name__ == "__main__":
    main()
