"""Adaptive rate limiting against the usual strategies, side by side, in virtual time.

Every strategy meets the same SimulatedAPI (hidden token buckets shaped the way providers
document them, lognormal latency) in trio's MockClock, so an hour of traffic takes a
second and every figure is exact for its seed. Each scenario runs with and without
rate-limit headers. Prints a table per scenario and, last, one JSON line.

    python benchmarks/ratelimit.py --quick      # 3 seeds, fewer uploads: a smoke run
    python benchmarks/ratelimit.py              # the full matrix, 5 seeds
    python benchmarks/ratelimit.py --scenario strict --strategy cardmill --seeds 10
    python benchmarks/ratelimit.py --plots docs/img   # also draw the figures (matplotlib)
"""

from __future__ import annotations

import os
import sys

# benchmarks/http.py would shadow the standard library's http package (httpx needs it).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import contextlib
import json
import math
import random
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import trio
import trio.testing

from cardmill import (
    Document,
    LimitKind,
    MemoryStorage,
    Overloaded,
    RateLimited,
    TransientError,
)
from cardmill.engine import Engine, Event, RateChanged, SharedBucket
from cardmill.testing import HiddenLimits, SimulatedAPI, lognormal

T = TypeVar("T")

STRATEGIES = [
    "sequential",
    "fixed_c2_retry",
    "fixed_c8_sdk_retries",
    "static_oracle",
    "static_0.75",
    "global_pause_15s",
    "cardmill",
]


def _fixed(size: int) -> Callable[[random.Random], int]:
    return lambda rng: size


def _varied(rng: random.Random) -> int:
    # Lognormal document sizes from 0.5 to 32 KB (median 4 KB).
    return int(min(32_000, max(500, rng.lognormvariate(math.log(4000), 0.9))))


@dataclass
class Scenario:
    """One shape of hidden limit. Rates are per minute; bursts in seconds of the limit."""

    name: str
    rpm: float | None = 120.0
    itpm: float | None = None
    request_burst: float = 1.0
    token_burst: float = 30.0
    uploads: int = 400
    headers: bool = False
    change_at: float | None = None  # virtual second at which the limits change
    change_factor: float = 1.0
    doc_bytes: Callable[[random.Random], int] = field(default=_fixed(1600))
    token_noise: float = 0.0
    workers: int = 1  # engines sharing one SharedBucket
    cotenant: float = 0.0  # share of the request limit another client takes, steadily
    concurrency: int = 8
    latency_sigma: float = 0.3

    def factor(self, at: float) -> float:
        return self.change_factor if self.change_at is not None and at >= self.change_at else 1.0

    def binding(self, mean_tokens: float) -> str:
        """Which limit goodput is measured against: input tokens whenever they are
        limited (documents are usually bound by them), else requests."""
        return "requests" if self.itpm is None else "tokens"


BASE = [
    Scenario("strict"),
    Scenario("strict_c4", concurrency=4, uploads=300),
    Scenario(
        "tokens",
        rpm=None,
        itpm=90_000.0,
        doc_bytes=_varied,
        token_noise=0.4,
    ),
    Scenario(
        "both",
        rpm=53.0,
        itpm=90_000.0,
        doc_bytes=_varied,
        token_noise=0.4,
    ),
    Scenario("step_down", change_at=120.0, change_factor=0.5, uploads=420),
    Scenario("step_up", change_at=120.0, change_factor=2.0, uploads=900),
    Scenario("shared_4", rpm=240.0, workers=4, concurrency=4, uploads=800),
    Scenario("strict_30", rpm=30.0, uploads=150),
    Scenario("cotenant", rpm=600.0, cotenant=0.3, uploads=1200, concurrency=16),
]
SCENARIOS = [s for base in BASE for s in (base, replace(base, name=base.name + "_h", headers=True))]


@dataclass
class Trace:
    rates: list[tuple[float, float | None]] = field(default_factory=list)
    cuts: int = 0
    failed: int = 0


# -- baselines, written the way people write them --------------------------------------


class Gate:
    """What a baseline checks before each send: a pacer and/or a global pause.

    The pacer mirrors the provider's buckets exactly (their rates and depths), scaled
    by ``share``: an oracle told everything, or a static share of it.
    """

    def __init__(self, scenario: Scenario | None = None, share: float = 1.0) -> None:
        self.mirror: HiddenLimits | None = None
        if scenario is not None:
            self.mirror = HiddenLimits(
                requests_per_minute=scenario.rpm and scenario.rpm * share,
                input_tokens_per_minute=scenario.itpm and scenario.itpm * share,
                burst_seconds={
                    LimitKind.REQUESTS: scenario.request_burst,
                    LimitKind.INPUT_TOKENS: scenario.token_burst,
                },
            )
        self.paused_until = 0.0
        self.lock = trio.Lock()

    async def wait(self, tokens: float) -> None:
        async with self.lock:
            while True:
                now = trio.current_time()
                if now < self.paused_until:
                    await trio.sleep_until(self.paused_until)
                    continue
                if self.mirror is None:
                    return
                verdict = self.mirror.admit(now, tokens)
                if verdict.admitted:
                    return
                await trio.sleep(max(verdict.wait, 1e-6))


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
                await gate.wait(api.input_tokens(doc))  # an oracle knows the true count
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


def make_api(scenario: Scenario, seed: int) -> SimulatedAPI:
    return SimulatedAPI(
        requests_per_minute=scenario.rpm,
        input_tokens_per_minute=scenario.itpm,
        burst_seconds={
            LimitKind.REQUESTS: scenario.request_burst,
            LimitKind.INPUT_TOKENS: scenario.token_burst,
        },
        latency=lognormal(1.0, scenario.latency_sigma),
        headers=scenario.headers,
        token_noise=scenario.token_noise,
        seed=seed,
    )


async def one_run(scenario: Scenario, strategy: str, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    api = make_api(scenario, seed)
    docs = [
        Document(f"doc{i:05d}.txt", b"x" * scenario.doc_bytes(rng)) for i in range(scenario.uploads)
    ]
    mean_tokens = statistics.fmean(api.input_tokens(d) for d in docs)
    trace = Trace()

    async def change_limit() -> None:
        if scenario.change_at is None:
            return
        await trio.sleep(scenario.change_at)
        api.set_limits(
            None if scenario.rpm is None else scenario.rpm * scenario.change_factor,
            None if scenario.itpm is None else scenario.itpm * scenario.change_factor,
        )

    c = scenario.concurrency * scenario.workers

    async def cotenant() -> None:
        # Another client on the same key, steadily taking its share of the requests.
        if not scenario.cotenant or scenario.rpm is None:
            return
        interval = 60.0 / (scenario.rpm * scenario.cotenant)
        other = Document("cotenant.txt", b"x" * 1600)
        neighbour = SimulatedAPI(limits=api.hidden_limits(), latency=1.0, seed=seed + 1)
        async with trio.open_nursery() as others:
            while True:
                others.start_soon(_quietly, neighbour.analyze, other)
                await trio.sleep(interval)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change_limit)
        nursery.start_soon(cotenant)
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
                api, docs, concurrency=c, gate=Gate(), on_429=sdk_retries(rng), rng=rng
            )
        elif strategy == "static_oracle":
            gate = Gate(scenario)
            trace.failed = await baseline(
                api, docs, concurrency=c, gate=gate, on_429=plain_retry(), rng=rng
            )
        elif strategy == "static_0.75":
            gate = Gate(scenario, share=0.75)
            trace.failed = await baseline(
                api, docs, concurrency=c, gate=gate, on_429=plain_retry(), rng=rng
            )
        elif strategy == "global_pause_15s":
            gate = Gate()
            trace.failed = await baseline(
                api, docs, concurrency=c, gate=gate, on_429=global_pause(gate), rng=rng
            )
        else:
            raise ValueError(strategy)
        nursery.cancel_scope.cancel()
    return metrics(scenario, api, trace, mean_tokens)


async def _quietly(fn: Callable[[Document], Awaitable[object]], document: Document) -> None:
    with contextlib.suppress(RateLimited, Overloaded, TransientError):
        await fn(document)


class DictStore:
    """SharedBucket's store in memory, on trio's clock: N engines of one process stand
    for N workers sharing PostgreSQL (the same steps, in virtual time)."""

    def __init__(self) -> None:
        self.states: dict[str, Any] = {}

    async def update_rate_state(
        self, name: str, step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]]
    ) -> T:
        await trio.lowlevel.checkpoint()
        raw = self.states.get(name)
        state, result = step(None if raw is None else json.loads(raw), trio.current_time())
        self.states[name] = json.dumps(state)
        return result


async def run_cardmill(
    api: SimulatedAPI, docs: list[Document], scenario: Scenario, seed: int
) -> Trace:
    trace = Trace()
    storage = MemoryStorage()
    run = await storage.create_run(docs)

    def observe(event: Event) -> None:
        if isinstance(event, RateChanged):
            trace.rates.append((event.at, event.requests_per_second))

    store = DictStore()
    engines = []
    for worker in range(scenario.workers):
        bucket = SharedBucket(store, "shared") if scenario.workers > 1 else None
        engines.append(
            Engine(
                storage,
                api,
                concurrency=scenario.concurrency,
                observer=observe if worker == 0 else None,
                bucket=bucket,
                worker=f"w{worker}",
                rng=random.Random(seed * 100 + worker),
            )
        )
    async with trio.open_nursery() as nursery:
        for engine in engines:
            nursery.start_soon(engine.execute, run.id)
    final = await storage.get_run(run.id)
    trace.cuts = engines[0].bucket.statistics().cuts
    trace.failed = final.failed_items
    return trace


# -- metrics -------------------------------------------------------------------------------


def metrics(
    scenario: Scenario, api: SimulatedAPI, trace: Trace, mean_tokens: float
) -> dict[str, Any]:
    stats = api.statistics()
    accepted = list(zip(stats.accepted_at, stats.accepted_tokens, strict=True))
    accepted.sort()
    times = [t for t, _ in accepted]
    successes = len(accepted)
    binding = scenario.binding(mean_tokens)

    def limit_at(at: float) -> float:
        """The binding limit at ``at`` left to us, in its own units per second."""
        base = scenario.rpm if binding == "requests" else scenario.itpm
        assert base is not None
        return base / 60 * scenario.factor(at) * (1.0 - scenario.cotenant)

    def units(lo: float, hi: float) -> float:
        return sum(1.0 if binding == "requests" else tok for t, tok in accepted if lo <= t < hi)

    reference = scenario.change_at or 0.0
    start = reference + 30.0
    end = times[int(0.9 * (len(times) - 1))] if times else 0.0
    goodput = None
    if end > start + 10:
        goodput = units(start, end) / (end - start) / limit_at(end)
    arrivals = sorted([*stats.accepted_at, *stats.rejected_at])
    steady_requests = sum(1 for t in arrivals if start <= t <= end)
    steady_429 = sum(1 for t in stats.rejected_at if start <= t <= end)
    return {
        "goodput_ratio": goodput,
        "rate_limited_share": stats.rate_limited / stats.requests if stats.requests else 0.0,
        "steady_429_share": steady_429 / steady_requests if steady_requests else None,
        "attempts_per_success": stats.requests / successes if successes else None,
        "failed": trace.failed,
        "convergence_s": (
            convergence(times, units, limit_at, reference) if scenario.change_at else None
        ),
        "cuts_per_burst": (
            (trace.cuts / len(bursts(sorted(stats.rejected_at))))
            if stats.rejected_at and trace.cuts
            else None
        ),
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


def convergence(
    times: list[float],
    units: Callable[[float, float], float],
    limit_at: Callable[[float], float],
    reference: float,
) -> float | None:
    """Seconds after ``reference`` until every later 20 s window gets >= 90% of the limit."""
    if not times:
        return None
    end = times[int(0.9 * (len(times) - 1))]
    window = 20.0
    t = reference
    last_bad = None
    while t + window <= end:
        if units(t, t + window) / window < 0.9 * limit_at(t + window):
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


def run_all(
    seeds: int, only: list[str] | None, strategies: list[str], quick: bool
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    traces: dict[str, Any] = {}
    for scenario in SCENARIOS:
        if only and scenario.name not in only and scenario.name.removesuffix("_h") not in only:
            continue
        if quick:
            scenario = replace(scenario, uploads=min(scenario.uploads, 200))
        results[scenario.name] = {}
        for strategy in strategies:
            base = scenario.name.removesuffix("_h")
            if strategy != "cardmill" and base != scenario.name and base in results:
                # The baselines ignore headers: the same runs as without them.
                results[scenario.name][strategy] = results[base][strategy]
                continue
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
        "steady_429_share",
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

    os.makedirs(out_dir, exist_ok=True)
    scenario = next(s for s in SCENARIOS if s.name == "step_down")
    trace = data["traces"].get("step_down")
    if trace and scenario.rpm is not None:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = [t for t, r in trace if r is not None]
        ys = [r * 60 for t, r in trace if r is not None]
        ax.step(xs, ys, where="post", label="cardmill pacing rate")
        end = max(xs) if xs else 300
        change = scenario.change_at or 0
        limit_x = [0, change, change, end]
        limit_y = [scenario.rpm, scenario.rpm, scenario.rpm * 0.5, scenario.rpm * 0.5]
        ax.plot(limit_x, limit_y, "k--", label="hidden limit")
        ax.set_xlabel("virtual seconds")
        ax.set_ylabel("requests per minute")
        ax.set_title("Strict hidden limit drops to 50% at 120 s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ratelimit-step-down.png"), dpi=110)
        plt.close(fig)
    steady = data["results"].get("strict")
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
        ax.set_title("Strict per-second bucket: goodput vs 429 share")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "ratelimit-goodput-vs-429.png"), dpi=110)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, at most 200 uploads")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    parser.add_argument("--strategy", action="append", help="only this strategy (repeatable)")
    parser.add_argument("--plots", metavar="DIR", help="write PNG figures here")
    args = parser.parse_args()
    seeds = args.seeds or (3 if args.quick else 5)
    strategies = args.strategy or STRATEGIES
    data = run_all(seeds, args.scenario, strategies, args.quick)
    if args.plots:
        plots(args.plots, data)
    print(json.dumps({"benchmark": "ratelimit", "seeds": seeds, "scenarios": data["results"]}))


if __name__ == "__main__":
    main()
