"""Storage calls whose commit succeeded but whose answer was lost, then tried again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from cardmill import MemoryStorage, PermanentError, RunStatus, TransientStorageError, UploadStatus
from cardmill.engine import Engine, Event, UploadCompleted, UploadFailed
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import docs


class LosesAnswers:
    """MemoryStorage whose chosen calls commit, then raise TransientStorageError."""

    def __init__(self, inner: MemoryStorage, method: str, times: int = 1) -> None:
        self._inner = inner
        self._method = method
        self._left = times

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        async def lossy(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            if self._left:
                self._left -= 1
                raise TransientStorageError(f"{name}: connection lost after commit")
            return result

        return lossy


def _recorder() -> tuple[list[Event], Callable[[Event], None]]:
    seen: list[Event] = []
    return seen, seen.append


async def test_a_completion_whose_answer_was_lost_is_counted_and_strands_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = MemoryStorage(clock=trio.current_time)
    run = await inner.create_run(docs(4))
    storage = LosesAnswers(inner, "complete_and_claim")
    seen, observe = _recorder()
    engine = Engine(
        storage,
        ScriptedProvider(default=Step(1.0)),
        concurrency=1,
        observer=observe,
        lease_seconds=600,
    )
    t0 = trio.current_time()
    summary = await engine.execute(run.id)
    await check_invariants(inner, run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.completed == 4
    assert sum(isinstance(e, UploadCompleted) for e in seen) == 4
    # Four one-second requests and a backoff: no upload waited out its lease.
    assert trio.current_time() - t0 < 60


async def test_a_failure_whose_answer_was_lost_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = MemoryStorage(clock=trio.current_time)
    run = await inner.create_run(docs(2))
    storage = LosesAnswers(inner, "fail_upload")
    seen, observe = _recorder()
    provider = ScriptedProvider(default=Step(1.0, error=PermanentError("no")))
    summary = await Engine(storage, provider, concurrency=1, observer=observe).execute(run.id)
    await check_invariants(inner, run.id)
    assert summary.run.failed_items == 2
    assert summary.failed == 2
    assert sum(isinstance(e, UploadFailed) for e in seen) == 2


async def test_a_claim_whose_answer_was_lost_does_not_wait_out_its_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = MemoryStorage(clock=trio.current_time)
    run = await inner.create_run(docs(3))
    storage = LosesAnswers(inner, "claim_upload")
    t0 = trio.current_time()
    summary = await Engine(
        storage,
        ScriptedProvider(default=Step(1.0)),
        concurrency=1,
        lease_seconds=600,
    ).execute(run.id)
    await check_invariants(inner, run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert trio.current_time() - t0 < 60, trio.current_time() - t0


async def test_ctrl_c_in_the_backoff_after_a_lost_claim_leaves_the_run_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = MemoryStorage(clock=trio.current_time)
    run = await inner.create_run(docs(3))
    storage = LosesAnswers(inner, "claim_upload")
    engine = Engine(storage, ScriptedProvider(default=Step(1.0)), concurrency=1)
    with trio.move_on_after(0.1):  # inside the first backoff wait
        await engine.execute(run.id)
    got = await inner.get_run(run.id)
    statuses = [u.status for u in await inner.list_uploads(run.id)]
    await check_invariants(inner, run.id)
    assert UploadStatus.LOADING not in statuses
    assert got.status == RunStatus.CANCELLED
