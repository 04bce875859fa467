"""Finding the documents a user names on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs

from ..errors import DocumentError, InputError
from ..model import MAX_DOCUMENT_BYTES, Document, path_name, read_file, sniff_media_type

__all__ = ["Collected", "Found", "collect", "read"]

SUPPORTED_SUFFIXES: Final = frozenset(
    {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf"}
)
MAX_FILE_BYTES: Final = MAX_DOCUMENT_BYTES


@attrs.frozen
class Found:
    """A file to analyse, and its name as the run will show it."""

    path: Path
    name: str


@attrs.frozen
class Collected:
    """What the paths named: the files to analyse, how many files of other types were
    left out, and a one-line notice for each entry skipped for safety."""

    found: list[Found]
    skipped: int
    notices: list[str]


def collect(paths: list[str]) -> Collected:
    """Expand files and directories into the files to analyse.

    Directories are walked recursively; hidden files and directories are skipped, and so
    are files of other types (they are counted). Only regular files whose real path
    stays inside the folder are taken: a symbolic link out of it (to ``/etc/passwd``,
    ``~/.ssh``, ``/proc/self/environ``), a FIFO, a device or a socket is never opened,
    and gets a notice naming it. Links that stay inside are followed, a directory once:
    a link loop cannot make the walk go round. Named files are always taken, whatever
    their type. Names that are not UTF-8 are shown with backslash escapes (``\\xff``).

    Raises:
        InputError: a path does not exist.
    """
    found: list[Found] = []
    notices: list[str] = []
    seen: set[tuple[int, int]] = set()
    skipped = 0
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            if path.is_symlink():
                raise InputError(f"{path_name(raw)}: broken symbolic link")
            raise InputError(f"{path_name(raw)}: no such file or directory")
        if path.is_dir():
            for file in _walk(path, seen, notices):
                if file.suffix.lower() in SUPPORTED_SUFFIXES:
                    found.append(Found(file, path_name(file)))
                else:
                    skipped += 1
        else:
            key = _key(path)
            if key not in seen:
                seen.add(key)
                found.append(Found(path, path_name(raw)))
    return Collected(found, skipped, notices)


def _key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _walk(root: Path, seen: set[tuple[int, int]], notices: list[str]) -> Iterator[Path]:
    top = os.path.realpath(root)
    visited_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            key = _key(directory)
        except OSError:
            continue
        if key in visited_dirs:
            continue  # a symlink loop, or a directory reached twice
        visited_dirs.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                # Entries of a directory inside the folder are inside, but for links.
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not _inside(target, top):
                        notices.append(f"{path_name(path)}: a link to outside the folder")
                        continue
                if entry.is_dir(follow_symlinks=True):
                    subdirs.append(path)
                elif entry.is_file(follow_symlinks=True):
                    file_key = _key(path)
                    if file_key not in seen:
                        seen.add(file_key)
                        yield path
                elif entry.is_symlink() and not os.path.exists(path):
                    notices.append(f"{path_name(path)}: a broken link")
                else:
                    notices.append(f"{path_name(path)}: not a regular file")
            except OSError as exc:
                notices.append(f"{path_name(path)}: cannot read ({exc.strerror or exc})")
                continue
        stack.extend(reversed(subdirs))


def read(found: Found) -> tuple[Document, str | None]:
    """Read one file. A file that cannot be read gives an empty document and the reason;
    the run records it as a failed upload instead of stopping. Devices and FIFOs
    (``/dev/zero``, a pipe named on the command line) are refused unopened, and no more
    than `MAX_FILE_BYTES` + 1 bytes are ever read (see `cardmill.model.read_file`)."""
    try:
        data = read_file(found.path, max_bytes=MAX_FILE_BYTES, name=found.name)
    except DocumentError as exc:
        return _unreadable(found), str(exc)
    return Document(found.name, data, sniff_media_type(found.name, data)), None


def _unreadable(found: Found) -> Document:
    return Document(found.name, b"", "application/x-unreadable")
