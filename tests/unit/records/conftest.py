"""Records fixtures: every behaviour runs on SQLite (a temporary file) and on a real PostgreSQL server
(one per test session, a fresh database per test)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from postgres import postgres_server

from lmforge.records import Store, open_store

_databases = itertools.count()
TABLES = ("requests", "feedback", "review_items", "corrections")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of the session's PostgreSQL server (its `postgres` database)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_database(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the session's server, dropped after the test."""
    name = f"records_{next(_databases)}"
    admin = postgres_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_url.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return request.getfixturevalue("postgres_database")


@pytest.fixture(scope="session")
def postgres_records(postgres_url: str) -> str:
    """A database of the session's server with the records schema, which `store` empties per test
    (cheaper than a new database and its migration each time)."""
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute("CREATE DATABASE records")
    url = f"{postgres_url.rsplit('/', 1)[0]}/records"
    open_store(url).close()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.db'}"
    else:
        url = request.getfixturevalue("postgres_records")
        with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")
    with open_store(url) as opened:
        yield opened
