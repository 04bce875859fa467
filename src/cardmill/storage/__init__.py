"""Storage backends behind one protocol: MemoryStorage and SQLiteStorage."""

from __future__ import annotations

from ._base import Storage as Storage
from ._memory import MemoryStorage as MemoryStorage
from ._sqlite import SQLiteStorage as SQLiteStorage

__all__ = ["MemoryStorage", "SQLiteStorage", "Storage"]
