"""Finding the documents a user names on the command line."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import attrs
import click

from .._printable import printable
from ..errors import DocumentError, InputError
from ..model import (
    MAX_DOCUMENT_BYTES,
    MEDIA_TYPES,
    Document,
    path_name,
    read_file,
    sniff_media_type,
    unsupported_reason,
)
from ._words import counted

__all__ = ["Collected", "Found", "collect", "read"]

MAX_FILE_BYTES: Final = MAX_DOCUMENT_BYTES
_HEAD_BYTES: Final = 8192  # what `sniff_media_type` looks at
# Non-blocking: a file replaced by a FIFO between the check and the open cannot hang us.
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_LOG: Final = logging.getLogger("cardmill.cli")
# Caches tools write beside the files, never documents: not walked, not counted.
_CACHE_DIRS: Final = frozenset({"__pycache__", "node_modules"})


@attrs.frozen
class Found:
    """A file to analyse, and its name as the run will show it."""

    path: Path
    name: str


@attrs.frozen
class Collected:
    """What the paths named: the files to analyse, a line for each file of another
    type left out (its name and why), and a one-line notice for each entry skipped for
    safety."""

    found: list[Found]
    refused: list[str]
    notices: list[str]

    @property
    def skipped(self) -> int:
        """How many files of other types were left out."""
        return len(self.refused)

    def tell(self) -> None:
        """Print the notices on stderr, and with ``-v`` (logging at INFO) each file of
        another type left out, and why."""
        for notice in self.notices:
            click.echo(printable(f"cardmill: skipped {notice}"), err=True)
        if _LOG.isEnabledFor(logging.INFO):
            for line in self.refused:
                click.echo(printable(f"cardmill: skipped {line}"), err=True)


def collect(paths: list[str]) -> Collected:
    """Expand files and directories into the files to analyse.

    Directories are walked recursively; hidden files and directories, and the caches
    tools write beside files (``__pycache__``, ``node_modules``), are skipped. Only
    regular files whose real path stays inside the folder are taken: a symbolic link
    out of it (to ``/etc/passwd``, ``~/.ssh``, ``/proc/self/environ``), a FIFO, a
    device or a socket is never opened, and gets a notice naming it. Links that stay
    inside are followed, a directory once: a link loop cannot make the walk go round.
    Names that are not UTF-8 are shown with backslash escapes (``\\xff``).

    One rule decides, for files named and files found alike: a file is taken when
    `cardmill.model.sniff_media_type` gives its first bytes and name a type cardmill
    reads (Markdown, text, HTML, PDF); any other (RTF, CSV, an image, an unknown
    extension) is left out with the reason, which `Collected.tell` prints with ``-v``.
    A file whose first bytes cannot be read is judged by its name, and its upload then
    fails with the reason.

    Raises:
        InputError: a path does not exist, or the paths hold no file to analyse (the
            message gives the first file left out, and why).
    """
    found: list[Found] = []
    refused: list[str] = []
    notices: list[str] = []
    seen: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            if path.is_symlink():
                raise InputError(f"{path_name(raw)}: broken symbolic link")
            raise InputError(f"{path_name(raw)}: no such file or directory")
        if path.is_dir():
            files = [(file, path_name(file)) for file in _walk(path, seen, notices)]
        else:
            key = _key(path)
            if key in seen:
                continue
            seen.add(key)
            files = [(path, path_name(raw))]
        for file, shown in files:
            reason = _refusal(file, shown)
            if reason is None:
                found.append(Found(file, shown))
            else:
                refused.append(reason)
    if not found:
        where = ", ".join(path_name(p) for p in paths)
        first = f": {refused[0]}" if refused else ""
        more = f" (and {counted(len(refused) - 1, 'other file')})" if len(refused) > 1 else ""
        raise InputError(f"no documents found in {where}{first}{more}")
    return Collected(found, refused, notices)


def _refusal(path: Path, shown: str) -> str | None:
    """Why the file is left out, or None if it is taken."""
    head = b""  # unreadable: judged by its name; reading it later says why it fails
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a device or a FIFO named: its read refuses it, unopened
        with open(os.open(path, _OPEN_FLAGS), "rb") as file:
            head = file.read(_HEAD_BYTES) or b""
    except OSError:
        pass
    media_type = sniff_media_type(shown, head)
    return None if media_type in MEDIA_TYPES else unsupported_reason(shown, media_type)


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
                    if entry.name not in _CACHE_DIRS:
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
