"""What an install brings: the core, the extras, and a clear word when an extra is missing."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import cardmill
from cardmill.errors import MissingExtra
from cardmill.storage import PostgresStorage, redact_dsn

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
POSTGRES_MISSING = "PostgreSQL support needs the postgres extra: pip install 'cardmill[postgres]'"


def requirement_names(extra: str | None) -> set[str]:
    """The distributions cardmill requires, with `extra` (None: the core alone)."""
    names = set()
    for line in metadata.requires("cardmill") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None:
            wanted = extra is None
        else:
            wanted = extra is not None and marker.evaluate({"extra": extra})
        if wanted:
            names.add(requirement.name)
    return names


def test_the_core_installs_no_database_driver_and_no_http_server() -> None:
    core = requirement_names(None)
    assert {"trio", "httpx", "anthropic", "attrs"} <= core
    assert not core & {"psycopg", "psycopg-pool", "h11", "starlette", "hypercorn", "jinja2"}
    assert requirement_names("postgres") == {"psycopg", "psycopg-pool"}
    assert requirement_names("testing") == {"h11"}
    assert requirement_names("web") == {"starlette", "hypercorn", "jinja2", "markupsafe"}


def test_the_test_extra_brings_postgres_the_test_kit_and_the_viewer() -> None:
    # CI installs .[test] and must run the PostgreSQL and viewer tests, not skip them.
    test = PYPROJECT["project"]["optional-dependencies"]["test"]
    assert "cardmill[postgres,testing,web]" in test


def test_the_viewer_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import cardmill

    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, "cardmill.web", raising=False)
    monkeypatch.delattr(cardmill, "web", raising=False)
    with pytest.raises(MissingExtra) as caught:
        import cardmill.web
    assert str(caught.value) == "The web viewer needs the web extra: pip install 'cardmill[web]'"
    assert caught.value.extra == "web"


def test_the_viewers_templates_and_static_files_are_in_the_package() -> None:
    from importlib import resources

    web = resources.files("cardmill.web")
    for name in ("base.html", "runs.html", "run.html", "cards.html", "error.html"):
        assert (web / "templates" / name).is_file(), name
    for name in ("viewer.js", "viewer.css"):
        assert (web / "static" / name).is_file(), name


def test_metrics_are_an_extra_that_the_tests_install() -> None:
    assert not requirement_names(None) & {"opentelemetry-api", "opentelemetry-sdk"}
    assert requirement_names("metrics") == {"opentelemetry-api", "opentelemetry-sdk"}
    assert "opentelemetry-exporter-otlp-proto-http" in requirement_names("otlp")
    assert "cardmill[metrics,otlp]" in PYPROJECT["project"]["optional-dependencies"]["test"]


def test_the_version_is_the_distributions() -> None:
    assert cardmill.__version__ == metadata.version("cardmill")
    assert cardmill.__version__ == PYPROJECT["project"]["version"]


def test_the_license_file_matches_the_metadata() -> None:
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_the_changelog_keeps_an_unreleased_section_and_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{cardmill.__version__}]" in changelog


@pytest.fixture
def without_psycopg(monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver is not installed: importing it fails, as in an install without the extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg_pool", None)


@pytest.mark.usefixtures("without_psycopg")
async def test_postgres_storage_without_the_extra_names_it() -> None:
    with pytest.raises(MissingExtra) as caught:
        async with PostgresStorage.open("postgresql://app:s3cret@db.example/cards"):
            pass  # pragma: no cover - the open fails first
    assert str(caught.value) == POSTGRES_MISSING
    assert caught.value.extra == "postgres"
    assert isinstance(caught.value, ImportError)
    assert "s3cret" not in str(caught.value)


@pytest.mark.usefixtures("without_psycopg")
def test_redact_dsn_without_the_extra_names_it() -> None:
    with pytest.raises(MissingExtra, match=re.escape(POSTGRES_MISSING)):
        redact_dsn("postgresql://app:s3cret@db.example/cards")


def test_the_loopback_server_without_h11_names_the_testing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cardmill.testing

    monkeypatch.setitem(sys.modules, "h11", None)
    assert cardmill.testing.make_pdf([["still here"]]).startswith(b"%PDF")
    with pytest.raises(MissingExtra) as caught:
        from cardmill.testing import FakeAnthropicServer  # noqa: F401
    assert str(caught.value) == (
        "cardmill.testing.FakeAnthropicServer needs the testing extra: "
        "pip install 'cardmill[testing]'"
    )


def test_the_lock_ci_installs_from_satisfies_every_declared_range() -> None:
    # .ci/run installs from requirements/constraints.txt; a range changed in pyproject.toml
    # without refreshing the lock (tools/refresh-constraints.sh) is caught here.
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[Requirement(name).name.lower().replace("_", "-")] = version
    project = PYPROJECT["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += [r for r in extra if not r.startswith("cardmill[")]
    assert len(declared) > 20
    for line in declared:
        requirement = Requirement(line)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])


def test_every_core_requirement_has_an_upper_bound_but_calendar_versions() -> None:
    # A next major is untested until the lock is refreshed onto it.
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name != "attrs":  # attrs numbers its releases by year
            assert any(s.operator == "<" for s in requirement.specifier), line
