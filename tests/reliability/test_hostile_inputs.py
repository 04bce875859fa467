"""Hostile inputs through the real CLI: each bad file fails alone, with a clear reason."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from cardmill import Document, DocumentError
from cardmill.cli._collect import Found, read
from cardmill.testing import make_pdf

from .conftest import cardmill, verify_database

T = TypeVar("T")


def encrypted_pdf() -> bytes:
    return make_pdf([["Secret", "", "Hidden text."]], password="pw")


ROOT = os.geteuid() == 0


def unreadable(path: Path) -> None:
    if ROOT:
        # Permissions do not stop root; a file whose read fails does. Linked from a
        # folder it is outside it, and skipped unread with a notice instead.
        path.symlink_to("/proc/self/mem")
    else:
        path.write_text("you cannot read me")
        path.chmod(0)


EXPECTED = {
    "empty.md": "empty document",
    "junk.txt": "binary content, not text",
    "junk.pdf": "not a PDF",
    "encrypted.pdf": "encrypted PDF",
    "truncated.pdf": "unreadable PDF",
    "huge.txt": "over the 32 MB limit for one document",
    "unreadable.txt": "cannot read",
    # Quadratic for html.parser: minutes each, enough to hold every reading slot.
    **{f"quadratic-{i}.html": "no text to make cards from" for i in range(4)},
}


async def test_hostile_folder(tmp_path: Path, env: dict[str, str]) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nThis one is fine. It makes a card.\n")
    (folder / "also-good.html").write_text("<h1>Fine</h1><p>Also fine here.</p>")
    (folder / "empty.md").write_bytes(b"")
    (folder / "junk.txt").write_bytes(bytes(range(256)) * 64)
    (folder / "junk.pdf").write_bytes(os.urandom(4096))
    (folder / "encrypted.pdf").write_bytes(encrypted_pdf())
    (folder / "truncated.pdf").write_bytes(make_pdf([["Cut", "", "short text"]])[:150])
    with open(folder / "huge.txt", "wb") as big:  # noqa: ASYNC230
        big.truncate(50 * 1024 * 1024)
    (folder / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))
    unreadable(folder / "unreadable.txt")
    for i in range(4):
        (folder / f"quadratic-{i}.html").write_bytes(b"<a " * 40_000)
    (folder / "loop").symlink_to(folder)  # a directory symlink loop
    (folder / ".hidden.md").write_text("# Hidden\n\nNever read.\n")

    expected = dict(EXPECTED)
    if ROOT:
        del expected["unreadable.txt"]

    done = await cardmill("analyze", str(folder), "--json", env=env)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert done.returncode == 1, stderr  # PARTIAL
    if ROOT:
        assert f"cardmill: skipped {folder}/unreadable.txt: a link to outside" in stderr
    summary = json.loads(done.stdout)
    assert summary["run"]["status"] == "partial"
    assert summary["run"]["completed_items"] == 3
    assert summary["run"]["failed_items"] == len(expected)

    shown = await cardmill("show", summary["run"]["id"], "--json", env=env)
    uploads = {Path(u["name"]).name: u for u in json.loads(shown.stdout)["uploads"]}
    assert ".hidden.md" not in uploads
    assert len(uploads) == len(expected) + 3  # the loop added nothing twice
    for name, reason in expected.items():
        assert uploads[name]["status"] == "failed", name
        assert reason in uploads[name]["error"], (name, uploads[name]["error"])
        assert "\n" not in uploads[name]["error"]
    for name in ("good.md", "also-good.html", "latin1.txt"):
        assert uploads[name]["status"] == "completed"
    await verify_database(Path(env["CARDMILL_DB"]), finished=False)


async def test_paths_refused_up_front(tmp_path: Path, env: dict[str, str]) -> None:
    missing = await cardmill("analyze", str(tmp_path / "missing.md"), env=env)
    assert missing.returncode == 2
    assert missing.stderr.decode().strip() == (
        f"cardmill: error: {tmp_path / 'missing.md'}: no such file or directory"
    )
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    dangling = await cardmill("analyze", str(tmp_path / "dangling"), env=env)
    assert dangling.returncode == 2
    assert "broken symbolic link" in dangling.stderr.decode()
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    nothing = await cardmill("analyze", str(empty), env=env)
    assert nothing.returncode == 2
    assert "no documents found" in nothing.stderr.decode()


# -- files that never end, or never open ----------------------------------------------


def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.md"
    os.mkfifo(path)  # opening it to read, with no writer, waits for ever
    return path


async def read_off_thread(fn: Callable[[], T]) -> T:
    # A read that blocks for ever must fail this test, not hang it.
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda tmp_path: Path("/dev/zero"), "a character device"),
        (fifo, "a FIFO"),
    ],
    ids=["dev-zero", "fifo"],
)
async def test_files_that_never_end_are_refused_unopened(
    tmp_path: Path, make: Callable[[Path], Path], kind: str
) -> None:
    path = make(tmp_path)
    document, problem = await read_off_thread(lambda: read(Found(path, str(path))))
    assert problem == f"{path}: not a regular file ({kind})"
    assert document.data == b""
    with pytest.raises(DocumentError) as caught:
        await read_off_thread(lambda: Document.from_path(path))
    assert str(caught.value) == f"{path}: not a regular file ({kind})"


def test_a_file_bigger_than_its_size_says_is_cut_at_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # /proc files say they are empty (st_size 0) and are not: a size check before the
    # read lets them through, however long they are.
    path = Path("/proc/self/status")
    assert path.stat().st_size == 0
    assert len(path.read_bytes()) > 64
    monkeypatch.setattr("cardmill.cli._collect.MAX_FILE_BYTES", 64)
    document, problem = read(Found(path, "status"))
    assert problem == "status: over the 64-byte limit for one document"
    assert document.data == b""
    with pytest.raises(DocumentError) as caught:
        Document.from_path(path, max_bytes=64)
    assert str(caught.value) == f"{path}: over the 64-byte limit for one document"


async def test_devices_and_fifos_named_on_the_command_line_fail_alone(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "good.md").write_text("# Good\n\nThis one is fine. It makes a card.\n")
    pipe = fifo(tmp_path)
    with trio.fail_after(120):
        done = await cardmill(
            "analyze", "/dev/zero", str(pipe), str(tmp_path / "good.md"), "--json", env=env
        )
    assert done.returncode == 1, done.stderr.decode()  # PARTIAL
    summary = json.loads(done.stdout)
    assert (summary["run"]["completed_items"], summary["run"]["failed_items"]) == (1, 2)
    shown = await cardmill("show", summary["run"]["id"], "--json", env=env)
    errors = {u["name"]: u["error"] for u in json.loads(shown.stdout)["uploads"]}
    assert errors["/dev/zero"] == "/dev/zero: not a regular file (a character device)"
    assert errors[str(pipe)] == f"{pipe}: not a regular file (a FIFO)"


# -- names that are not UTF-8, links out of the folder, pseudo-files -------------------


async def test_a_file_name_that_is_not_utf8_is_stored_printably(
    tmp_path: Path, env: dict[str, str]
) -> None:
    folder = tmp_path / "names"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nThis one is fine. It makes a card.\n")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9-\xff.txt"), "wb") as raw:  # noqa: ASYNC230
        raw.write(b"Latin-1 names are common on old disks.\n")
    with open(os.path.join(os.fsencode(folder), b"empty-\xfe.md"), "wb"):  # noqa: ASYNC230
        pass  # fails alone, and its error names it
    done = await cardmill("analyze", str(folder), "--json", env=env)
    assert "Traceback" not in done.stderr.decode()
    assert done.returncode == 1, done.stderr.decode()  # PARTIAL: the empty one
    run = json.loads(done.stdout)["run"]
    assert (run["completed_items"], run["failed_items"]) == (2, 1)
    shown = await cardmill("show", run["id"], "--json", env=env)
    uploads = {Path(u["name"]).name: u for u in json.loads(shown.stdout)["uploads"]}
    assert uploads["caf\\xe9-\\xff.txt"]["status"] == "completed"
    failed = uploads["empty-\\xfe.md"]
    assert failed["error"] == f"{folder}/empty-\\xfe.md: empty document"
    await verify_database(Path(env["CARDMILL_DB"]), finished=False)


async def test_links_out_of_the_folder_and_pseudo_files_are_never_read(
    tmp_path: Path, env: dict[str, str]
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "id_rsa.txt").write_text("TOPSECRET private key\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nThis one is fine. It makes a card.\n")
    (folder / ".inner").mkdir()
    (folder / ".inner" / "kept.md").write_text("# Kept\n\nA link inside the folder is read.\n")
    (folder / "kept.md").symlink_to(folder / ".inner" / "kept.md")
    (folder / "passwd.txt").symlink_to(secret / "id_rsa.txt")
    (folder / "ssh").symlink_to(secret)
    (folder / "up").symlink_to("..")
    (folder / "environ.txt").symlink_to("/proc/self/environ")
    (folder / "zero.txt").symlink_to("/dev/zero")
    (folder / "gone.md").symlink_to(folder / "nowhere.md")
    os.mkfifo(folder / "pipe.md")
    with trio.fail_after(120):
        done = await cardmill(
            "analyze", str(folder), "--json", env={**env, "LEAKED": "TOPSECRET env"}
        )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    run = json.loads(done.stdout)["run"]
    assert (run["completed_items"], run["total_items"]) == (2, 2)
    for name, why in [
        ("passwd.txt", "a link to outside the folder"),
        ("ssh", "a link to outside the folder"),
        ("up", "a link to outside the folder"),
        ("environ.txt", "a link to outside the folder"),
        ("zero.txt", "a link to outside the folder"),
        ("gone.md", "a broken link"),
        ("pipe.md", "not a regular file"),
    ]:
        assert f"cardmill: skipped {folder / name}: {why}\n" in stderr, (name, stderr)
    exported = await cardmill("export", run["id"], env=env)
    assert b"TOPSECRET" not in exported.stdout
    assert b"TOPSECRET" not in await trio.Path(env["CARDMILL_DB"]).read_bytes()
    shown = await cardmill("show", run["id"], "--json", env=env)
    names = sorted(Path(u["name"]).name for u in json.loads(shown.stdout)["uploads"])
    assert names == ["good.md", "kept.md"]


def test_a_read_with_nothing_ready_fails_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A regular file can answer a non-blocking read with EAGAIN (a mandatory lock, some
    # FUSE file systems): Python's read gives None. A FIFO with a silent writer does the
    # same once the regular-file check is out of the way.
    monkeypatch.setattr("cardmill.model._check_regular", lambda shown, mode: None)
    path = tmp_path / "slow.txt"
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR)  # a writer that never writes
    try:
        document, problem = read(Found(path, "slow.txt"))
    finally:
        os.close(writer)
    assert problem == "slow.txt: cannot read (no data ready)"
    assert document.data == b""
