"""Hostile inputs through the real CLI: each bad file fails alone, with a clear reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cardmill.testing import make_pdf

from .conftest import cardmill, verify_database


def encrypted_pdf() -> bytes:
    return make_pdf([["Secret", "", "Hidden text."]], password="pw")


def unreadable(path: Path) -> None:
    if os.geteuid() == 0:
        # Permissions do not stop root; a file whose read fails does.
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
    "latin1.txt": "not valid UTF-8 text",
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

    done = await cardmill("analyze", str(folder), "--json", env=env)
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    assert done.returncode == 1, stderr  # PARTIAL
    summary = json.loads(done.stdout)
    assert summary["run"]["status"] == "partial"
    assert summary["run"]["completed_items"] == 2
    assert summary["run"]["failed_items"] == len(EXPECTED)

    shown = await cardmill("show", summary["run"]["id"], "--json", env=env)
    uploads = {Path(u["name"]).name: u for u in json.loads(shown.stdout)["uploads"]}
    assert ".hidden.md" not in uploads
    assert len(uploads) == len(EXPECTED) + 2  # the loop added nothing twice
    for name, reason in EXPECTED.items():
        assert uploads[name]["status"] == "failed", name
        assert reason in uploads[name]["error"], (name, uploads[name]["error"])
        assert "\n" not in uploads[name]["error"]
    for name in ("good.md", "also-good.html"):
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
