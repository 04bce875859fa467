"""Child process for the crash test: hammers complete_upload until it is killed.

Usage: python crash_child.py DATABASE SEED
Prints "ready" once the database is open, then creates runs and completes, fails and
releases uploads forever; the parent kills it with SIGKILL at a random instant.
"""

from __future__ import annotations

import random
import sys

import trio

from cardmill import CardDraft, Document, SQLiteStorage, UploadStatus


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with SQLiteStorage.open(path) as storage:
        print("ready", flush=True)
        while True:
            runs = [r for r in await storage.list_runs() if not r.status.finished]
            if not runs:
                docs = [Document(f"{i}.txt", rng.randbytes(64)) for i in range(rng.randint(5, 30))]
                runs = [await storage.create_run(docs)]
            run = runs[0]
            # Uploads a killed predecessor left LOADING go back first.
            for stale in await storage.list_uploads(run.id, UploadStatus.LOADING):
                await storage.release_upload(stale.id)
            while u := await storage.claim_upload(run.id, worker="child", lease_seconds=60):
                roll = rng.random()
                if roll < 0.8:
                    drafts = [CardDraft(f"card {i}", "x" * 200) for i in range(rng.randint(0, 40))]
                    await storage.complete_upload(u.id, drafts, worker="child")
                    await storage.complete_upload(u.id, drafts)  # idempotent repeat
                elif roll < 0.9:
                    await storage.fail_upload(u.id, "injected failure", worker="child")
                else:
                    await storage.release_upload(u.id, worker="child")
            await storage.finish_run(run.id)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
