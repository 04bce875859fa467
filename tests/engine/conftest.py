from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cardmill import Document, MemoryStorage, SQLiteStorage, Storage


def docs(n: int, size: int = 400) -> list[Document]:
    return [Document(f"doc{i:04d}.txt", b"x" * size) for i in range(n)]


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
    else:
        async with SQLiteStorage.open(tmp_path / "engine.db") as s:
            yield s
