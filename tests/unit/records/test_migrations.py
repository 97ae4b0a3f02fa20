"""Opening the records: the shipped migrations build exactly the tables the code describes, on SQLite
and on a real PostgreSQL server; a database ahead of this lmforge, a bad URL or a server that does
not answer is refused with one line, not a traceback or a hang."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from processes import free_port
from sqlalchemy import create_engine, inspect, text

from lmforge.errors import LmforgeError
from lmforge.records import RecordsError, open_store, store
from lmforge.records.schema import VERSION_TABLE, Base

TABLES = {"requests", "feedback", "review_items", "corrections"}


def migration_context(connection) -> MigrationContext:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})


def test_upgrade_head_builds_exactly_the_tables_of_the_code(database_url):
    open_store(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == TABLES | {VERSION_TABLE}
            head = ScriptDirectory(str(store.MIGRATIONS)).get_current_head()
            assert migration_context(connection).get_current_revision() == head
            assert compare_metadata(migration_context(connection), Base.metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_the_tables_and_upgrade_restores_them(database_url):
    open_store(database_url).close()
    engine = create_engine(database_url)
    config = Config()
    config.set_main_option("script_location", str(store.MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
            assert set(inspect(connection).get_table_names()) == {VERSION_TABLE}
    finally:
        engine.dispose()
    open_store(database_url).close()  # from base to head again


def test_a_database_at_a_newer_revision_is_refused_with_one_line(database_url):
    open_store(database_url).close()
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0099_from_the_future'"))
    finally:
        engine.dispose()
    with pytest.raises(RecordsError, match="revision '0099_from_the_future'.*upgrade lmforge") as raised:
        open_store(database_url)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("url, expected", [
    ("mysql://user@127.0.0.1/records", "unsupported database"),
    ("postgresql+nosuchdriver://user@127.0.0.1/records", "cannot use this database URL"),
    ("sqlite://:not a url", "not a database URL"),
    ("sqlite:////no/such/folder/records.db", "cannot open the records database"),
])
def test_a_bad_url_is_refused_with_one_line(url, expected):
    with pytest.raises(RecordsError, match=expected) as raised:
        open_store(url)
    assert isinstance(raised.value, LmforgeError) and "\n" not in str(raised.value)


def test_an_unreachable_server_is_refused_with_one_line_and_no_password():
    url = f"postgresql+psycopg://lmforge:s3cret@127.0.0.1:{free_port()}/records"
    with pytest.raises(RecordsError, match="cannot open the records database") as raised:
        open_store(url)
    message = str(raised.value)
    assert "\n" not in message and "s3cret" not in message and "lmforge:***@127.0.0.1" in message


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a stalled or firewalled server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_server_that_does_not_answer_is_given_up_on_after_the_connect_timeout(silent_server, monkeypatch):
    monkeypatch.setattr(store, "CONNECT_TIMEOUT_SECONDS", 2)  # psycopg's shortest
    with pytest.raises(RecordsError, match="cannot open the records database") as raised:
        open_store(f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/records")
    assert "\n" not in str(raised.value)


def test_a_path_or_none_means_a_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url, file in [(None, tmp_path / "records.db"), (tmp_path / "a.db", tmp_path / "a.db"),
                      ("b.db", tmp_path / "b.db")]:
        with open_store(url) as opened:
            assert opened.url == f"sqlite:///{file}"
        assert file.exists()
