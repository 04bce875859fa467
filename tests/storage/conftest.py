from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from cardmill import MemoryStorage, SQLiteStorage, Storage
from cardmill.storage import PostgresStorage

from .. import pg


class FakeClock:
    """Wall-clock stand-in for leases: it moves only when told."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend:
    """Opens (and for SQLite, reopens) one backend's database."""

    def __init__(self, kind: str, path: Path, clock: Callable[[], float]) -> None:
        self.kind = kind
        self.path = path
        self.clock = clock
        self._memory: MemoryStorage | None = None
        self.schema = pg.new_schema()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Storage]:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryStorage(clock=self.clock)
            yield self._memory
        elif self.kind == "postgres":
            async with PostgresStorage.open(pg.DSN, schema=self.schema, clock=self.clock) as s:
                yield s
        else:
            async with SQLiteStorage.open(self.path, clock=self.clock) as storage:
                yield storage


def make_backend(kind: str, directory: Path, clock: Callable[[], float]) -> Backend:
    return Backend(kind, directory / "cardmill.db", clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Backend]:
    if request.param == "postgres":
        pg.require()
    made = make_backend(request.param, tmp_path, clock)
    yield made
    if request.param == "postgres":
        pg.drop_schema(made.schema)


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    async with backend.open() as s:
        yield s
