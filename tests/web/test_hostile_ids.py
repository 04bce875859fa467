"""Run ids in the path that no storage can hold: a plain 404, on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cardmill import MemoryStorage, SQLiteStorage
from cardmill.storage import Storage

from .. import pg
from .conftest import client_of, hostile_run

PATHS = ("", "/cards", "/progress.json", "/export.jsonl")


@pytest.fixture
def schema() -> Iterator[str]:
    pg.require()
    name = pg.new_schema()
    yield name
    pg.drop_schema(name)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_storage(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Storage]:
    if request.param == "memory":
        async with MemoryStorage() as memory:
            yield memory
    elif request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "cards.db"
        async with SQLiteStorage.open(str(path)) as sqlite:
            yield sqlite
    else:
        from cardmill.storage import PostgresStorage

        schema = request.getfixturevalue("schema")
        async with PostgresStorage.open(pg.DSN, schema=schema) as postgres:
            yield postgres


@pytest.mark.parametrize("run_id", ["%00", "a%00b", "run-%00"])
@pytest.mark.parametrize("path", PATHS)
async def test_a_run_id_holding_nul_is_not_found(
    any_storage: Storage, run_id: str, path: str
) -> None:
    run = await hostile_run(any_storage)
    async with client_of(any_storage) as client:
        answer = await client.get(f"/runs/{run_id}{path}")
        assert answer.status_code == 404, answer.text[:200]
        assert "no run" in answer.text
        # The storage still answers afterwards.
        assert (await client.get(f"/runs/{run.id}")).status_code == 200


async def test_nul_in_every_filter_is_answered_plainly(any_storage: Storage) -> None:
    run = await hostile_run(any_storage)
    async with client_of(any_storage) as client:
        for name in ("q", "upload", "tag", "field", "value", "after", "status", "page"):
            answer = await client.get(f"/runs/{run.id}/cards", params={name: "a\x00b"})
            assert answer.status_code in (200, 400), (name, answer.status_code)
            answer = await client.get(f"/runs/{run.id}", params={name: "a\x00b"})
            assert answer.status_code in (200, 400), (name, answer.status_code)
