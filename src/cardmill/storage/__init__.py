"""Storage backends behind one protocol: MemoryStorage, SQLiteStorage, PostgresStorage."""

from __future__ import annotations

from ._base import AnswerStore as AnswerStore
from ._base import Storage as Storage
from ._dsn import redact_dsn as redact_dsn
from ._memory import MemoryStorage as MemoryStorage
from ._postgres import PostgresStorage as PostgresStorage
from ._sqlite import SQLiteStorage as SQLiteStorage

__all__ = [
    "AnswerStore",
    "MemoryStorage",
    "PostgresStorage",
    "SQLiteStorage",
    "Storage",
    "redact_dsn",
]
