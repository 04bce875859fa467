"""Batch mode, shown end to end: the console script against the loopback FakeAnthropicServer.

Three scenes, each printed with the commands it ran and what the server saw::

    .venv/bin/python tools/batch_demo.py [--docs N]

1. the same documents analysed synchronously and with ``--batch``: the cost of each;
2. a batch run killed (SIGKILL) after its create call reached the server but before its
   answer came back, then ``cardmill resume RUN``: the server's submission log shows
   each upload submitted once (the batch is adopted, not sent again);
3. a batch run stopped by ``--max-cost``, then finished by ``resume --max-cost HIGHER``.

Nothing leaves the machine: the server listens on 127.0.0.1 and the key is a fake one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import trio

from cardmill.testing import FakeAnthropicServer

KEY = "fake-key-batch-demo"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _script() -> list[str]:
    found = Path(sys.executable).with_name("cardmill")
    return [str(found)] if found.exists() else [sys.executable, "-m", "cardmill"]


async def _run(args: list[str], env: dict[str, str]) -> Any:
    print("$ cardmill " + " ".join(args))
    return await trio.run_process(
        [*_script(), *args], capture_stdout=True, capture_stderr=True, check=False, env=env
    )


def _env(server: FakeAnthropicServer, db: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CARDMILL_"))}
    return {
        **clean,
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": server.url,
        "CARDMILL_DB": str(db),
        "CARDMILL_BATCH_POLL": "0.1",
    }


def _submitted(server: FakeAnthropicServer) -> Counter[str]:
    return Counter(s.custom_id for s in server.batch_log)


async def compare_costs(folder: Path, work: Path) -> None:
    print("\n== 1. the same documents, synchronously and in a batch ==")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.5) as server:
        env = _env(server, work / "compare.db")
        sync = json.loads((await _run(["analyze", str(folder), "--json"], env)).stdout)
        batch = json.loads((await _run(["analyze", str(folder), "--batch", "--json"], env)).stdout)
    for label, data in (("synchronous", sync), ("batch", batch)):
        run = data["run"]
        print(
            f"  {label:<12} run {run['id']}: {run['status']}, {run['completed_items']} documents, "
            f"{run['total_cards']} cards, cost ${run['cost_usd']:.6f}"
        )
    print(f"  batch / synchronous cost: {batch['run']['cost_usd'] / sync['run']['cost_usd']:.3f}")


async def kill_then_resume(folder: Path, work: Path) -> None:
    print("\n== 2. kill -9 while the batch's create answer is on its way, then resume ==")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.5) as server:
        env = _env(server, work / "kill.db")
        held = server.hold_batch_call("create")
        command = [*_script(), "analyze", str(folder), "--batch", "--quiet"]
        print("$ cardmill analyze " + str(folder) + " --batch --quiet   # killed below")
        async with trio.open_nursery() as nursery:
            process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    check=False,
                    env=env,
                    capture_stdout=True,
                    capture_stderr=True,
                )
            )
            await held.wait()
            process.send_signal(signal.SIGKILL)
        print(f"  killed (exit {process.returncode}); the server had made the batch and logged:")
        made = server.batch_calls["create"]
        print(f"  {made} create call(s), {len(_submitted(server))} uploads submitted")
        runs = json.loads((await _run(["runs", "--json"], env)).stdout)
        run_id = runs[0]["id"]
        print(f"  run {run_id} is {runs[0]['status']}")
        resumed = await _run(["resume", run_id, "--json"], env)
        run = json.loads(resumed.stdout)["run"]
        print(
            f"  resumed: {run['status']}, {run['completed_items']} documents, "
            f"{run['total_cards']} cards, cost ${run['cost_usd']:.6f}"
        )
        counts = _submitted(server)
        print(
            f"  server: {server.batch_calls['create']} create call(s) in all; "
            f"{len(counts)} uploads submitted, {_times(counts)}"
        )


def _times(counts: Counter[str]) -> str:
    """How often the uploads were submitted: "each once", or the tally of how often."""
    if set(counts.values()) == {1}:
        return "each once"
    return "submitted " + ", ".join(f"{n} time(s): {k}" for k, n in sorted(counts.items()))


async def cap_then_finish(folder: Path, work: Path) -> None:
    print("\n== 3. a batch run stopped by --max-cost, then finished with a higher cap ==")
    async with FakeAnthropicServer(api_key=KEY, batch_delay=0.2) as server:
        env = _env(server, work / "cap.db")
        dry = json.loads((await _run(["analyze", str(folder), "--dry-run", "--json"], env)).stdout)
        cap = round(2.5 * max(r["batch_cost_usd"] for r in dry["documents"]), 6)
        first = await _run(
            ["analyze", str(folder), "--batch", "--max-cost", str(cap), "--json"], env
        )
        data = json.loads(first.stdout)
        run = data["run"]
        print(
            f"  exit {first.returncode}: {run['status']}, {run['completed_items']} of "
            f"{run['total_items']} documents, cost ${run['cost_usd']:.6f} (cap ${cap})"
        )
        print(f"  stopped: {data['summary']['stopped']}")
        again = await _run(["resume", run["id"], "--max-cost", "1", "--json"], env)
        run = json.loads(again.stdout)["run"]
        print(
            f"  exit {again.returncode}: {run['status']}, {run['completed_items']} documents, "
            f"cost ${run['cost_usd']:.6f}; {len(_submitted(server))} uploads submitted, "
            f"{_times(_submitted(server))}"
        )


async def main(docs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cardmill-batch-demo-") as tmp:
        work = Path(tmp)
        folder = work / "docs"
        folder.mkdir()
        examples = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".md", ".txt", ".html"))
        for i in range(docs):
            source = examples[i % len(examples)]
            shutil.copy(source, folder / f"{i:03d}-{source.name}")
        await compare_costs(folder, work)
        await kill_then_resume(folder, work)
        await cap_then_finish(folder, work)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=12, help="documents per scene")
    trio.run(main, parser.parse_args().docs)
