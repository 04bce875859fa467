"""A `--db` that cannot be used is refused with its reason before anything is announced."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import EXAMPLES
from .test_cli import cardmill, one_line_error

POSTGRES_MISSING = "PostgreSQL support needs the postgres extra: pip install 'cardmill[postgres]'"


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "ok.md"
    path.write_text("# ok\n\nfine.\n")
    return path


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A directory in which no file can be created, by this user."""
    if os.geteuid() == 0:
        place = Path("/sys")  # sysfs holds no regular file, whoever asks
    else:
        place = tmp_path / "read-only"
        place.mkdir()
        place.chmod(0o555)
    try:
        (place / "probe.db").touch()
    except OSError:
        yield place
    else:
        (place / "probe.db").unlink()
        pytest.skip(f"{place} is writable here")
    finally:
        if place != Path("/sys"):
            place.chmod(0o755)


async def test_a_missing_directory_is_named_before_anything_is_announced(
    env: dict[str, str], document: Path
) -> None:
    done = await cardmill("analyze", str(document), "--db", "/nonexistent/dir/x.db", env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        "cardmill: error: /nonexistent/dir/x.db: directory /nonexistent/dir does not exist"
    )
    assert done.stdout == b""


async def test_a_directory_is_not_a_database(
    env: dict[str, str], document: Path, tmp_path: Path
) -> None:
    for command in (["analyze", str(document)], ["runs"], ["show", "run-x"], ["export", "run-x"]):
        done = await cardmill(*command, "--db", str(tmp_path), env=env)
        assert done.returncode == 2, command
        assert one_line_error(done.stderr) == (
            f"cardmill: error: {tmp_path}: is a directory, not a database file"
        )


async def test_a_file_in_place_of_a_directory_is_named(env: dict[str, str], document: Path) -> None:
    db = document / "x.db"
    done = await cardmill("analyze", str(document), "--db", str(db), env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (f"cardmill: error: {db}: {document} is not a directory")


async def test_an_unwritable_place_is_named(
    env: dict[str, str], document: Path, unwritable: Path
) -> None:
    db = unwritable / "cards.db"
    done = await cardmill("analyze", str(document), "--db", str(db), env=env)
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert line.startswith(f"cardmill: error: {db}: cannot create a database in {unwritable} (")
    assert not db.exists()


@pytest.fixture
def no_psycopg_path(tmp_path: Path) -> Path:
    """A directory that, first on the path, makes psycopg and psycopg_pool unimportable."""
    stubs = tmp_path / "stubs"
    for name in ("psycopg", "psycopg_pool"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n'
        )
    return stubs


@pytest.mark.parametrize(
    "db", ["postgresql://app:s3cret@db.example/cards", "host=db.example dbname=cards user=app"]
)
@pytest.mark.parametrize(
    "command",
    [["analyze", str(EXAMPLES)], ["runs"], ["show", "run-x"], ["export", "run-x"], ["worker"]],
)
async def test_the_cli_names_the_extra_for_a_postgres_url(
    env: dict[str, str], no_psycopg_path: Path, command: list[str], db: str
) -> None:
    env["PYTHONPATH"] = str(no_psycopg_path)
    done = await cardmill(*command, "--db", db, env=env)
    assert done.returncode == 2
    assert one_line_error(done.stderr) == f"cardmill: error: {POSTGRES_MISSING}"
    assert done.stdout == b""


async def test_the_cli_works_on_sqlite_without_the_extra(
    env: dict[str, str], no_psycopg_path: Path, tmp_path: Path
) -> None:
    env["PYTHONPATH"] = str(no_psycopg_path)
    done = await cardmill("analyze", str(EXAMPLES), "--quiet", env=env)
    assert done.returncode == 0, done.stderr.decode()
    # A file name with an "=" that is no libpq keyword is still a SQLite file.
    named = await cardmill(
        "analyze", str(EXAMPLES), "--quiet", "--db", "a=b.db", env=env, cwd=tmp_path
    )
    assert named.returncode == 0, named.stderr.decode()
    assert (tmp_path / "a=b.db").is_file()
