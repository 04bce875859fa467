"""Which files a run takes: one rule for the files named and the files a folder holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cardmill import Document
from cardmill.cli._collect import collect
from cardmill.errors import InputError

from .test_cli import cardmill, one_line_error

READS = (
    "cardmill reads Markdown (.md, .markdown), plain text (.txt, .text), HTML (.html, .htm),"
    " PDF (.pdf)"
)
RTF = b"{\\rtf1\\ansi {\\b Bold} words.}\n"
CSV = b"name,colour\nrose,red\n"
OTHERS = {
    "notes.rtf": (RTF, "unsupported type text/rtf (a .rtf file)"),
    "table.csv": (CSV, "unsupported type text/csv (a .csv file)"),
    "notes.log": (b"plain words\n", "unsupported type application/octet-stream (a .log file)"),
    "letter.txt": (RTF, "unsupported type text/rtf (by its content)"),
    "blob": (
        b"\x00\x01\x02" * 10,
        "unsupported type application/octet-stream (no extension, and binary content)",
    ),
}
TAKEN = {"a.md": b"# A\n\nOne idea here.\n", "plain": b"Words without an extension.\n"}


def files(folder: Path) -> Path:
    folder.mkdir()
    for name, (data, _) in OTHERS.items():
        (folder / name).write_bytes(data)
    for name, data in TAKEN.items():
        (folder / name).write_bytes(data)
    return folder


def test_files_named_and_files_found_are_taken_and_refused_alike(tmp_path: Path) -> None:
    folder = files(tmp_path / "docs")
    walked = collect([str(folder)])
    named = collect(sorted(str(p) for p in folder.iterdir()))
    for got in (walked, named):
        assert sorted(Path(f.name).name for f in got.found) == sorted(TAKEN)
        assert sorted(got.refused) == sorted(
            f"{folder / name}: {why}; {READS}" for name, (_, why) in OTHERS.items()
        )
        assert got.skipped == len(OTHERS)


def test_a_document_of_another_format_has_its_type_whatever_reads_it(tmp_path: Path) -> None:
    folder = files(tmp_path / "docs")
    assert Document.from_path(folder / "notes.rtf").media_type == "text/rtf"
    assert Document.from_path(folder / "table.csv").media_type == "text/csv"
    assert Document.from_path(folder / "letter.txt").media_type == "text/rtf"
    assert Document("x.txt", b"%PDF-1.7\n").media_type == "application/pdf"
    assert Document("Dr. Who", b"words").media_type == "text/plain"


def test_nothing_to_take_says_what_was_found(tmp_path: Path) -> None:
    rtf = tmp_path / "notes.rtf"
    rtf.write_bytes(RTF)
    with pytest.raises(InputError) as info:
        collect([str(rtf)])
    assert str(info.value) == (
        f"no documents found in {rtf}: {rtf}: unsupported type text/rtf (a .rtf file); {READS}"
    )


@pytest.mark.parametrize("named", [False, True])
async def test_analyze_leaves_out_rtf_and_csv_and_v_lists_why(
    env: dict[str, str], tmp_path: Path, named: bool
) -> None:
    folder = files(tmp_path / "docs")
    paths = sorted(str(p) for p in folder.iterdir()) if named else [str(folder)]
    quiet = await cardmill("analyze", *paths, "--json", env=env)
    assert quiet.returncode == 0, quiet.stderr.decode()
    said = quiet.stderr.decode()
    assert f"(skipped {len(OTHERS)} files of other types)" in said.splitlines()[0]
    assert "cardmill: skipped" not in said
    run = json.loads(quiet.stdout)["run"]
    assert (run["total_items"], run["completed_items"]) == (len(TAKEN), len(TAKEN))

    loud = await cardmill("analyze", *paths, "--json", "-v", env=env)
    assert loud.returncode == 0, loud.stderr.decode()
    listed = [line for line in loud.stderr.decode().splitlines() if "cardmill: skipped" in line]
    assert sorted(listed) == sorted(
        f"cardmill: skipped {folder / name}: {why}; {READS}" for name, (_, why) in OTHERS.items()
    )


async def test_analyze_of_only_an_rtf_file_is_one_line_and_exit_2(
    env: dict[str, str], tmp_path: Path
) -> None:
    rtf = tmp_path / "notes.rtf"
    rtf.write_bytes(RTF)
    done = await cardmill("analyze", str(rtf), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        f"cardmill: error: no documents found in {rtf}: {rtf}: unsupported type text/rtf "
        f"(a .rtf file); {READS}"
    )


def test_caches_beside_the_files_are_not_walked_but_a_named_file_in_one_is_read(
    tmp_path: Path,
) -> None:
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\xa7\r\r\n" + bytes(12))
    (tmp_path / "node_modules" / "pkg").mkdir(parents=True)
    (tmp_path / "node_modules" / "pkg" / "README.md").write_text("# Not mine\n")
    (tmp_path / "notes.md").write_text("# Mine\n\nWords.\n")
    got = collect([str(tmp_path)])
    assert [f.path.name for f in got.found] == ["notes.md"]
    assert got.refused == []
    assert got.notices == []
    named = collect([str(tmp_path / "node_modules" / "pkg" / "README.md")])
    assert [f.path.name for f in named.found] == ["README.md"]
