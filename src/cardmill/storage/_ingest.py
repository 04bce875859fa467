"""Creating a run in bounded chunks, for every backend built on storage/_transactions.py.

Documents are read and hashed outside any transaction (the iterable may be a generator
that reads files), then written a chunk at a time, each chunk one short write
transaction: another process's workers on the same database keep renewing and
completing meanwhile. Until its last chunk commits, the run is marked ``creating``: no
method of the Storage protocol sees it (``RunNotFound``), so a run whose ingest died
half-way is never claimed, listed or settled as if it held every document. Every chunk
adds its uploads and their count to ``total_items`` together, so ``total_items`` equals
the run's uploads after every committed transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from .._recipe import STUDY_CARDS, Recipe
from ..errors import InputError
from ..model import Document, RunStatus, UploadStatus
from ._base import new_id
from ._transactions import Tx

__all__ = ["Chunks", "add_uploads", "discard_some"]

#: the most uploads one ingest transaction writes
CHUNK_ROWS: Final = 500
#: the most document bytes one ingest transaction writes (a larger document goes alone)
CHUNK_BYTES: Final = 16 * 1024 * 1024

# upload id, position, name, media type, size, sha256, data
Row = tuple[str, int, str, str, int, str, bytes]
_END: Final = object()


class Chunks:
    """Reads documents into rows, a bounded chunk per call; call it from a thread."""

    def __init__(
        self, documents: Iterable[Document], *, rows: int = CHUNK_ROWS, size: int = CHUNK_BYTES
    ) -> None:
        self._documents = documents
        self._it: Iterator[Document] | None = None
        self._next: object = _END
        self._position = 0
        self._rows = rows
        self._size = size

    def read(self) -> tuple[list[Row], bool]:
        """The next chunk of rows, and whether it is the last."""
        if self._it is None:
            self._it = iter(self._documents)
            self._next = next(self._it, _END)
        rows: list[Row] = []
        size = 0
        while self._next is not _END and len(rows) < self._rows and size < self._size:
            doc = self._next
            if not isinstance(doc, Document):
                raise InputError(
                    f"documents[{self._position}] is a {type(doc).__name__}, not a Document"
                )
            rows.append(
                (
                    new_id("up"),
                    self._position,
                    doc.name,
                    doc.media_type,
                    doc.size,
                    doc.sha256,
                    doc.data,
                )
            )
            size += doc.size
            self._position += 1
            self._next = next(self._it, _END)
        return rows, self._next is _END


def add_uploads(
    tx: Tx,
    run_id: str,
    name: str,
    rows: Sequence[Row],
    first: bool,
    last: bool,
    now: float,
    recipe: Recipe = STUDY_CARDS,
    provider: str = "",
    model: str = "",
) -> None:
    """One chunk: its uploads and documents, counted in ``total_items`` at once."""
    if first:
        tx.run(
            "INSERT INTO runs (id, name, status, total_items, created_at, creating,"
            " recipe_toml, recipe_digest, provider, model) VALUES (?, ?, ?, 0, ?, 1, ?, ?, ?, ?)",
            (
                run_id,
                name,
                RunStatus.PENDING.value,
                now,
                recipe.to_toml(),
                recipe.digest,
                provider,
                model,
            ),
        )
    pending = UploadStatus.PENDING.value
    tx.many(
        "INSERT INTO uploads (id, run_id, position, name, media_type, size, sha256, status)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (upload_id, run_id, position, doc_name, media_type, size, sha256, pending)
            for upload_id, position, doc_name, media_type, size, sha256, _ in rows
        ],
    )
    tx.many(
        "INSERT INTO documents (upload_id, data) VALUES (?, ?)",
        [(row[0], row[6]) for row in rows],
    )
    tx.run(
        "UPDATE runs SET total_items = total_items + ?, creating = ? WHERE id = ? AND creating = 1",
        (len(rows), 0 if last else 1, run_id),
    )


def discard_some(tx: Tx, run_id: str, limit: int) -> bool:
    """Delete up to ``limit`` uploads of a run still being created; True while some remain.

    A run whose creation finished is never touched.
    """
    row = tx.one("SELECT creating FROM runs WHERE id = ?" + tx.lock, (run_id,))
    if row is None or not row[0]:
        return False
    ids: list[str] = [
        r[0] for r in tx.all("SELECT id FROM uploads WHERE run_id = ? LIMIT ?", (run_id, limit))
    ]
    if not ids:
        tx.run("DELETE FROM runs WHERE id = ?", (run_id,))
        return False
    tx.many("DELETE FROM documents WHERE upload_id = ?", [(i,) for i in ids])
    tx.many("DELETE FROM uploads WHERE id = ?", [(i,) for i in ids])
    tx.run("UPDATE runs SET total_items = total_items - ? WHERE id = ?", (len(ids), run_id))
    return True
