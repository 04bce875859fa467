"""Four `cardmill worker` processes sharing one run and one rate limit through PostgreSQL.

    python benchmarks/scaleout.py --quick      # 300 uploads
    python benchmarks/scaleout.py              # 1,200 uploads, headers on and off

The hidden limit is FakeAnthropicServer's, strict (its bucket holds one second of it);
the workers are told nothing. The DSN comes
from CARDMILL_TEST_PG_DSN (default: the local server); the benchmark uses its own schema
and drops it afterwards.
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package (httpx needs it).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import secrets
import shutil
import time
from functools import partial
from pathlib import Path

import psycopg
import trio

from cardmill import Document, LimitKind, RunStatus
from cardmill.storage import PostgresStorage
from cardmill.testing import FakeAnthropicServer, lognormal

DSN = os.environ.get("CARDMILL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
KEY = "fake-key-bench-scaleout"
WORKERS = 4


def command() -> list[str]:
    script = Path(sys.executable).with_name("cardmill")
    if script.exists():
        return [str(script)]
    found = shutil.which("cardmill")
    return [found] if found else [sys.executable, "-m", "cardmill"]


async def one(n: int, rpm: float, headers: bool) -> dict[str, float]:
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        async with PostgresStorage.open(DSN, schema=schema) as storage:
            docs = (Document(f"d{i:05d}.md", f"# D{i}\n\nText {i}.\n".encode()) for i in range(n))
            run_id = (await storage.create_run(docs)).id
        async with FakeAnthropicServer(
            latency=lognormal(0.3, 0.3),
            requests_per_minute=rpm,
            burst_seconds={LimitKind.REQUESTS: 1.0},
            headers=headers,
            api_key=KEY,
        ) as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
            env.update(
                ANTHROPIC_API_KEY=KEY, ANTHROPIC_BASE_URL=server.url, CARDMILL_PG_SCHEMA=schema
            )
            argv = [*command(), "worker", "--db", DSN, "--run", run_id, "--concurrency", "4"]
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(WORKERS):
                    nursery.start_soon(
                        partial(trio.run_process, argv, env=env, capture_stderr=True)
                    )
            elapsed = time.perf_counter() - start
            ok = sorted(r.at for r in server.requests if r.status == 200)
            limited = sum(r.status == 429 for r in server.requests)
            total = len(server.requests)
        async with PostgresStorage.open(DSN, schema=schema) as storage:
            run = await storage.get_run(run_id)
            assert run.status == RunStatus.SUCCEEDED, run
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    first, last = ok[len(ok) // 5], ok[int(len(ok) * 0.9)]
    inside = sum(1 for t in ok if first <= t <= last)
    return {
        "goodput_ratio": (inside - 1) / (last - first) / (rpm / 60),
        "rate_limited_share": limited / total,
        "elapsed_s": elapsed,
        "requests": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, rpm = (300, 1200.0) if args.quick else (1200, 1200.0)
    blind = trio.run(one, n, rpm, False)
    told = trio.run(one, n, rpm, True) if not args.quick else None
    print(f"{WORKERS} worker processes x concurrency 4, {n} uploads, hidden limit {rpm:.0f}/min")
    print(f"{'headers off: goodput / limit':<34} {blind['goodput_ratio']:.3f}")
    print(f"{'headers off: requests answered 429':<34} {blind['rate_limited_share']:.2%}")
    print(f"{'headers off: elapsed':<34} {blind['elapsed_s']:.1f} s")
    if told:
        print(f"{'headers on: goodput / limit':<34} {told['goodput_ratio']:.3f}")
        print(f"{'headers on: requests answered 429':<34} {told['rate_limited_share']:.2%}")
    result = {
        "benchmark": "scaleout",
        "workers": WORKERS,
        "uploads": n,
        "goodput_ratio": round(blind["goodput_ratio"], 3),
        "rate_limited_share": round(blind["rate_limited_share"], 4),
    }
    if told:
        result["goodput_ratio_headers"] = round(told["goodput_ratio"], 3)
        result["rate_limited_share_headers"] = round(told["rate_limited_share"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
