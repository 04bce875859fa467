"""Adaptive rate limiting against the usual strategies, side by side, in virtual time.

Every strategy meets the same SimulatedAPI (hidden token buckets, lognormal latency) in
trio's MockClock, so an hour of traffic takes a second and every figure is exact for its
seed. Prints a table per scenario and, last, one JSON line.

    python benchmarks/ratelimit.py --quick      # under a minute
    python benchmarks/ratelimit.py              # the full run (10 seeds)
    python benchmarks/ratelimit.py --plots docs/img   # also draw the figures (needs matplotlib)
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package (httpx needs it).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import math
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from cardmill import Document, Limits, MemoryStorage, Overloaded, RateLimited, TransientError
from cardmill.engine import Engine, Event, RateChanged
from cardmill.testing import SimulatedAPI, lognormal

STRATEGIES = [
    "sequential",
    "fixed_c2_retry",
    "fixed_c8_sdk_retries",
    "static_oracle",
    "static_0.75",
    "global_pause_15s",
    "cardmill",
]


@dataclass
class Scenario:
    name: str
    rpm: float | None = 120.0  # hidden requests per minute
    itpm: float | None = None  # hidden input tokens per minute
    uploads: int = 600
    latency_sigma: float = 0.3
    headers: bool = False
    change_at: float | None = None  # virtual second at which the limit changes
    change_factor: float = 1.0
    start_rpm: float | None = None  # cardmill's first guess (scenarios "10x")
    doc_bytes: Callable[[random.Random], int] = lambda rng: 1600
    burst_seconds: float = 10.0

    def limit_rps(self, at: float) -> float:
        """The hidden limit, in uploads per second, at virtual time ``at``."""
        factor = self.change_factor if self.change_at is not None and at >= self.change_at else 1
        rates = []
        if self.rpm is not None:
            rates.append(self.rpm / 60 * factor)
        if self.itpm is not None:
            rates.append(self.itpm / 60 * factor / self.mean_tokens)
        return min(rates)

    mean_tokens: float = 800.0


SCENARIOS = [
    Scenario("steady"),
    Scenario("steady_headers", headers=True),
    Scenario("step_down_50", change_at=120.0, change_factor=0.5, uploads=500),
    Scenario("step_up_2x", change_at=120.0, change_factor=2.0, uploads=900),
    Scenario("start_10x_high", start_rpm=1200.0),
    Scenario("start_10x_low", start_rpm=12.0),
    Scenario(
        "input_tokens_bound",
        rpm=None,
        itpm=60_000.0,
        doc_bytes=lambda rng: int(rng.lognormvariate(math.log(6000), 0.5)),
    ),
    Scenario("heavy_tail_latency", latency_sigma=1.0),
]


@dataclass
class Trace:
    rates: list[tuple[float, float | None]] = field(default_factory=list)
    cuts: int = 0
    failed: int = 0


# -- baselines, written the way people write them --------------------------------------


class Gate:
    """What a baseline checks before each send: a static pacer and/or a global pause."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        self.next_at = 0.0
        self.paused_until = 0.0
        self.lock = trio.Lock()

    async def wait(self) -> None:
        async with self.lock:
            while True:
                now = trio.current_time()
                at = max(self.paused_until, self.next_at if self.rate else 0.0)
                if at <= now:
                    break
                await trio.sleep_until(at)
            if self.rate:
                self.next_at = max(self.next_at, now) + 1.0 / self.rate


async def baseline(
    api: SimulatedAPI,
    docs: list[Document],
    *,
    concurrency: int,
    gate: Gate,
    on_429: Callable[[RateLimited, int], Awaitable[bool]],
    rng: random.Random,
) -> int:
    """Workers pull documents; on_429 sleeps as the strategy does and says whether to retry."""
    queue = list(reversed(docs))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while queue:
            doc = queue.pop()
            attempt = 0
            while True:
                await gate.wait()
                try:
                    await api.analyze(doc)
                    break
                except RateLimited as exc:
                    attempt += 1
                    if not await on_429(exc, attempt):
                        failed += 1
                        break
                except (Overloaded, TransientError):
                    attempt += 1
                    await trio.sleep(rng.uniform(0, min(8.0, 0.5 * 2**attempt)))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return failed


def plain_retry() -> Callable[[RateLimited, int], Awaitable[bool]]:
    async def on_429(exc: RateLimited, attempt: int) -> bool:
        await trio.sleep(exc.retry_after or 1.0)
        return True

    return on_429


def sdk_retries(rng: random.Random) -> Callable[[RateLimited, int], Awaitable[bool]]:
    # The official SDKs: 2 retries, Retry-After when 0-60 s, else 0.5 s x 2^n capped at 8 s.
    async def on_429(exc: RateLimited, attempt: int) -> bool:
        if attempt > 2:
            return False
        if exc.retry_after is not None and 0 < exc.retry_after <= 60:
            delay = exc.retry_after
        else:
            delay = min(0.5 * 2 ** (attempt - 1), 8.0)
        await trio.sleep(delay * (1 - 0.25 * rng.random()))
        return True

    return on_429


def global_pause(gate: Gate) -> Callable[[RateLimited, int], Awaitable[bool]]:
    async def on_429(exc: RateLimited, attempt: int) -> bool:
        gate.paused_until = max(gate.paused_until, trio.current_time() + 15.0)
        return True

    return on_429


# -- one run -------------------------------------------------------------------------------


async def one_run(scenario: Scenario, strategy: str, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    api = SimulatedAPI(
        requests_per_minute=scenario.rpm,
        input_tokens_per_minute=scenario.itpm,
        burst_seconds=scenario.burst_seconds,
        latency=lognormal(1.0, scenario.latency_sigma),
        headers=scenario.headers,
        seed=seed,
    )
    docs = [
        Document(f"doc{i:05d}.txt", b"x" * scenario.doc_bytes(rng)) for i in range(scenario.uploads)
    ]
    scenario.mean_tokens = statistics.fmean(SimulatedAPI.input_tokens(d) for d in docs)
    trace = Trace()

    async def change_limit() -> None:
        if scenario.change_at is None:
            return
        await trio.sleep(scenario.change_at)
        api.set_limits(
            None if scenario.rpm is None else scenario.rpm * scenario.change_factor,
            None if scenario.itpm is None else scenario.itpm * scenario.change_factor,
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change_limit)
        oracle = scenario.limit_rps(0.0)
        if strategy == "cardmill":
            trace = await run_cardmill(api, docs, scenario, seed)
        elif strategy == "sequential":
            trace.failed = await baseline(
                api, docs, concurrency=1, gate=Gate(), on_429=plain_retry(), rng=rng
            )
        elif strategy == "fixed_c2_retry":
            trace.failed = await baseline(
                api, docs, concurrency=2, gate=Gate(), on_429=plain_retry(), rng=rng
            )
        elif strategy == "fixed_c8_sdk_retries":
            trace.failed = await baseline(
                api, docs, concurrency=8, gate=Gate(), on_429=sdk_retries(rng), rng=rng
            )
        elif strategy == "static_oracle":
            trace.failed = await baseline(
                api, docs, concurrency=8, gate=Gate(oracle), on_429=plain_retry(), rng=rng
            )
        elif strategy == "static_0.75":
            trace.failed = await baseline(
                api, docs, concurrency=8, gate=Gate(0.75 * oracle), on_429=plain_retry(), rng=rng
            )
        elif strategy == "global_pause_15s":
            gate = Gate()
            trace.failed = await baseline(
                api, docs, concurrency=8, gate=gate, on_429=global_pause(gate), rng=rng
            )
        else:
            raise ValueError(strategy)
        nursery.cancel_scope.cancel()
    return metrics(scenario, api, trace)


async def run_cardmill(
    api: SimulatedAPI, docs: list[Document], scenario: Scenario, seed: int
) -> Trace:
    trace = Trace()
    storage = MemoryStorage()
    run = await storage.create_run(docs)

    def observe(event: Event) -> None:
        if isinstance(event, RateChanged):
            trace.rates.append((event.at, event.requests_per_second))

    limits = None
    if scenario.start_rpm is not None:
        limits = Limits(start_requests_per_minute=scenario.start_rpm)
    engine = Engine(
        storage, api, concurrency=8, limits=limits, observer=observe, rng=random.Random(seed)
    )
    summary = await engine.execute(run.id)
    trace.cuts = engine.bucket.statistics().cuts
    trace.failed = summary.run.failed_items
    return trace


# -- metrics -------------------------------------------------------------------------------


def metrics(scenario: Scenario, api: SimulatedAPI, trace: Trace) -> dict[str, Any]:
    stats = api.statistics()
    accepted = sorted(stats.accepted_at)
    rejected = sorted(stats.rejected_at)
    successes = len(accepted)
    # Steady state: after the start-up burst and convergence, before the tail drains.
    reference = scenario.change_at or 0.0
    start = reference + 30.0
    end = accepted[int(0.9 * (len(accepted) - 1))] if accepted else 0.0
    goodput = None
    if end > start + 10:
        inside = sum(1 for t in accepted if start <= t <= end)
        goodput = inside / (end - start) / scenario.limit_rps(end)
    return {
        "goodput_ratio": goodput,
        "rate_limited_share": stats.rate_limited / stats.requests if stats.requests else 0.0,
        "attempts_per_success": stats.requests / successes if successes else None,
        "failed": trace.failed,
        "convergence_s": convergence(scenario, accepted, reference),
        "cuts_per_burst": (trace.cuts / len(bursts(rejected))) if rejected and trace.cuts else None,
        "rates": trace.rates,
    }


def bursts(rejected: list[float], gap: float = 2.0) -> list[float]:
    """Start times of 429 bursts: 429s closer than ``gap`` seconds belong together."""
    out: list[float] = []
    last = -math.inf
    for t in rejected:
        if t - last > gap:
            out.append(t)
        last = t
    return out


def convergence(scenario: Scenario, accepted: list[float], reference: float) -> float | None:
    """Seconds after ``reference`` until every later 20 s window gets >= 90% of the limit."""
    if not accepted:
        return None
    end = accepted[int(0.9 * (len(accepted) - 1))]
    window = 20.0
    t = reference
    last_bad = None
    i = j = 0
    while t + window <= end:
        while i < len(accepted) and accepted[i] < t:
            i += 1
        while j < len(accepted) and accepted[j] < t + window:
            j += 1
        if (j - i) / window < 0.9 * scenario.limit_rps(t + window):
            last_bad = t
        t += 1.0
    if t == reference:
        return None
    if last_bad is None:
        return 0.0
    if last_bad + window >= end - 1:
        return None  # never converged
    return last_bad + 1.0 - reference


def median(values: list[Any]) -> Any:
    real = [v for v in values if v is not None]
    if not real:
        return None
    return round(statistics.median(real), 4)


# -- main ------------------------------------------------------------------------------------


def run_all(seeds: int, only: list[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    traces: dict[str, Any] = {}
    for scenario in SCENARIOS:
        if only and scenario.name not in only:
            continue
        results[scenario.name] = {}
        for strategy in STRATEGIES:
            runs = []
            for seed in range(seeds):
                clock = trio.testing.MockClock(autojump_threshold=0)
                runs.append(trio.run(one_run, scenario, strategy, seed, clock=clock))
            results[scenario.name][strategy] = {
                key: median([r[key] for r in runs]) for key in runs[0] if key != "rates"
            }
            if strategy == "cardmill":
                traces[scenario.name] = runs[0]["rates"]
        print_table(scenario.name, results[scenario.name])
    return {"results": results, "traces": traces}


def print_table(name: str, rows: dict[str, dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    columns = [
        "goodput_ratio",
        "rate_limited_share",
        "attempts_per_success",
        "failed",
        "convergence_s",
        "cuts_per_burst",
    ]
    print(f"\n{name}")
    print(f"  {'strategy':<22}" + "".join(f"{c:>22}" for c in columns))
    for strategy, row in rows.items():
        print(f"  {strategy:<22}" + "".join(f"{fmt(row[c]):>22}" for c in columns))
    sys.stdout.flush()


def plots(out_dir: str, data: dict[str, Any]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plots", file=sys.stderr)
        return
    import os

    os.makedirs(out_dir, exist_ok=True)
    scenario = next(s for s in SCENARIOS if s.name == "step_down_50")
    trace = data["traces"].get("step_down_50")
    if trace:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = [t for t, r in trace if r is not None]
        ys = [r * 60 for t, r in trace if r is not None]
        ax.step(xs, ys, where="post", label="cardmill pacing rate")
        end = max(xs) if xs else 300
        limit_x = [0, scenario.change_at or 0, scenario.change_at or 0, end]
        assert scenario.rpm is not None
        limit_y = [scenario.rpm, scenario.rpm, scenario.rpm * 0.5, scenario.rpm * 0.5]
        ax.plot(limit_x, limit_y, "k--", label="hidden limit")
        ax.set_xlabel("virtual seconds")
        ax.set_ylabel("requests per minute")
        ax.set_title("Hidden limit drops to 50% at 120 s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ratelimit-step-down.png"), dpi=110)
        plt.close(fig)
    steady = data["results"].get("steady")
    if steady:
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (strategy, row) in enumerate(steady.items()):
            if row["goodput_ratio"] is None:
                continue
            label = strategy + (f" ({row['failed']:.0f} failed)" if row["failed"] else "")
            point = (row["rate_limited_share"] * 100, row["goodput_ratio"])
            ax.scatter(*point, s=40)
            offset = (6, -12 if i % 2 else 4)
            ax.annotate(label, point, textcoords="offset points", xytext=offset, fontsize=8)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(-0.1, 300)
        ax.set_xlabel("requests answered 429 (%, log scale above 1%)")
        ax.set_ylabel("goodput / hidden limit")
        ax.set_title("Steady saturation: goodput vs 429 share")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ratelimit-goodput-vs-429.png"), dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds instead of 10")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures here")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 10)
    data = run_all(seeds, args.scenario)
    if args.plots:
        plots(args.plots, data)
    print(json.dumps({"benchmark": "ratelimit", "seeds": seeds, "scenarios": data["results"]}))


if __name__ == "__main__":
    main()
