"""PostgreSQL for tests: the DSN from CARDMILL_TEST_PG_DSN, a fresh schema per test."""

from __future__ import annotations

import os
import secrets

import pytest

DSN = os.environ.get("CARDMILL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_problem: str | None = None
_checked = False


def unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    global _checked, _problem
    if not _checked:
        _checked = True
        try:
            import psycopg

            with psycopg.connect(DSN, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means: not usable here
            _problem = f"no PostgreSQL at {DSN} ({type(exc).__name__}: {exc})".splitlines()[0]
    return _problem


def require() -> None:
    """Skip when no server is reachable, except in CI, where that is a failure."""
    problem = unavailable()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {problem}")
    pytest.skip(problem)


def new_schema() -> str:
    return f"t_{secrets.token_hex(6)}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
