"""Smoke runs of every benchmark's --quick mode: they must run and end with their JSON line.

Speed is not asserted here (timings on shared machines are noisy); docs/benchmarks.md
has the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import pg

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "keys"),
    [
        ("ratelimit.py", ["scenarios"]),
        ("engine.py", ["memory_uploads_per_s", "sqlite_uploads_per_s", "sqlite_vs_raw_ratio"]),
        ("http.py", ["speedup_c2", "speedup_c4", "goodput_ratio", "rate_limited_share"]),
        ("scaleout.py", ["goodput_ratio", "rate_limited_share"]),
        ("batch.py", ["cost_ratio", "sync_cost_per_1000", "batch_cost_per_1000", "sync_429"]),
        ("search.py", ["cards", "sqlite", "sqlite_http"]),
        ("aio_stall.py", ["worst_stall_ms", "idle_worst_stall_ms", "guest_vs_trio_ratio"]),
        ("reuse.py", ["requests_ratio", "cost_ratio", "wall_ratio", "run2_reused"]),
    ],
)
def test_quick_mode_runs(script: str, keys: list[str]) -> None:
    if script == "scaleout.py":
        pg.require()
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == script.removesuffix(".py")
    for key in keys:
        assert key in last
