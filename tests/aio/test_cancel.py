"""Cancelling the awaiting asyncio task stops a run as a trio cancel scope does.

The cancel comes at an instant of the run's progress hypothesis chooses (the k-th
upload started or completed), not after a sleep: then in-flight uploads are PENDING,
the run CANCELLED and exact, and a resume analyses each remaining document once.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cardmill
import cardmill.aio
from cardmill.aio import _bridge
from cardmill.engine import UploadCompleted, UploadStarted

from .helpers import check, documents, scripted

COUNT = 8


def _cancelled_at(db: str, kind: type, nth: int, concurrency: int) -> tuple[str, set[str]]:
    """Analyse COUNT documents, cancelling the task at the ``nth`` event of ``kind``;
    the run's id and the names completed before the cancel."""
    provider = scripted(0.003)
    state: dict[str, object] = {}

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        seen = 0

        def observer(event: object) -> None:
            nonlocal seen
            if isinstance(event, UploadStarted) and "run" not in state:
                state["run"] = event.upload.run_id
            if isinstance(event, kind):
                seen += 1
                if seen == nth:
                    task.cancel()  # the observer runs on the loop's thread

        await cardmill.aio.analyze(
            documents(COUNT), db=db, provider=provider, concurrency=concurrency, observer=observer
        )

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert not _bridge._guests
    answered = {name for name, _ in provider.answers}
    return str(state["run"]), answered


@settings(max_examples=25)
@given(
    kind=st.sampled_from([UploadStarted, UploadCompleted]),
    nth=st.integers(1, COUNT - 1),
    concurrency=st.integers(1, 4),
)
def test_a_cancel_at_any_point_of_progress_leaves_the_run_resumable_and_exact(
    kind: type, nth: int, concurrency: int
) -> None:
    with tempfile.TemporaryDirectory() as where:
        db = str(Path(where) / "c.db")
        run_id, answered = _cancelled_at(db, kind, nth, concurrency)
        stopped = check(Path(db), run_id)  # counters == persisted cards
        # The cancel reaches trio a few loop turns later: the last uploads in flight may
        # have finished the run by then.
        assert stopped.status in (cardmill.RunStatus.CANCELLED, cardmill.RunStatus.SUCCEEDED)
        assert stopped.status == cardmill.RunStatus.CANCELLED or stopped.pending_items == 0
        assert stopped.completed_items + stopped.pending_items == COUNT
        assert stopped.total_cards == 2 * stopped.completed_items

        async def done_before() -> set[str]:
            uploads = await cardmill.aio.list_uploads(run_id, db=db)
            assert {u.status for u in uploads} <= {
                cardmill.UploadStatus.PENDING,
                cardmill.UploadStatus.COMPLETED,
            }  # nothing left LOADING
            return {u.name for u in uploads if u.status == cardmill.UploadStatus.COMPLETED}

        completed = asyncio.run(done_before())
        assert completed <= answered

        again = scripted(0.0)

        async def go_on() -> cardmill.RunSummary:
            return await cardmill.aio.resume(run_id, db=db, provider=again)

        summary = asyncio.run(go_on())
        assert summary.run.status == cardmill.RunStatus.SUCCEEDED
        # Each remaining document once; none completed before is sent again.
        sent = [name for name, _ in again.calls]
        assert sorted(sent) == sorted(set(sent))
        assert not completed & set(sent)
        assert len(completed) + len(sent) == COUNT
        final = check(Path(db), run_id)
        assert final.total_cards == 2 * COUNT


def test_wait_for_times_out_into_a_cancelled_resumable_run(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    slow = scripted(3600.0)  # answers only after an hour: the timeout comes first

    async def main() -> str:
        run = await cardmill.aio.create_run(documents(3), db=db, provider=slow)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cardmill.aio.resume(run.id, db=db, provider=slow), 0.2)
        return run.id

    run_id = asyncio.run(main())
    stopped = check(Path(db), run_id)
    assert stopped.status == cardmill.RunStatus.CANCELLED
    assert stopped.pending_items == 3
    assert slow.in_flight == 0


def test_a_timeout_scope_in_a_task_group_beside_other_work(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")

    async def main() -> tuple[str, cardmill.RunSummary]:
        run = await cardmill.aio.create_run(documents(4), db=db, provider="extractive")
        async with asyncio.TaskGroup() as group:

            async def bounded() -> None:
                async with asyncio.timeout(0.05):
                    await cardmill.aio.analyze(documents(2), db=db, provider=scripted(3600.0))

            stuck = group.create_task(bounded())
            other = group.create_task(cardmill.aio.resume(run.id, db=db))
            await asyncio.wait([stuck])
        return run.id, other.result()

    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(main())
    assert caught.group_contains(TimeoutError)
    runs = trio_runs(Path(db))
    assert sorted(r.status.name for r in runs) == ["CANCELLED", "SUCCEEDED"]


def trio_runs(db: Path) -> list[cardmill.Run]:
    async def main() -> list[cardmill.Run]:
        return await cardmill.aio.list_runs(db=str(db))

    return asyncio.run(main())


@pytest.mark.parametrize("how", ["timeout(0)", "cancel after one turn"])
def test_a_cancel_that_comes_as_the_trio_run_starts_is_not_lost(tmp_path: Path, how: str) -> None:
    """The cancel and the guest run's start land in one turn of the loop: the call is
    cancelled all the same, nothing is analysed, and no cancel is left over for the
    awaiting task's next await."""
    db = str(tmp_path / "c.db")
    provider = scripted(0.05)

    async def main() -> str:
        if how == "timeout(0)":
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await cardmill.aio.analyze(documents(COUNT), db=db, provider=provider)
        else:
            task = asyncio.create_task(
                cardmill.aio.analyze(documents(COUNT), db=db, provider=provider)
            )
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0)  # the awaiting task goes on: no cancel left over
        return "went on"

    assert asyncio.run(main()) == "went on"
    assert provider.calls == []
    assert not _bridge._guests
    for run in trio_runs(Path(db)):  # none, or one stopped before any upload started
        assert check(Path(db), run.id).completed_items == 0


def test_a_source_of_another_type_is_an_input_error(tmp_path: Path) -> None:
    async def main() -> None:
        await cardmill.aio.analyze([42], db=str(tmp_path / "c.db"))  # type: ignore[list-item]

    with pytest.raises(cardmill.InputError, match="sources: 42 is neither a path nor a Document"):
        asyncio.run(main())
