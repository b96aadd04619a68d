"""The postgres_url fixture hands out a fresh, empty database and drops it afterwards."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.postgres
_created: list[str] = []  # database names handed out by earlier tests in this module


def test_postgres_url_is_a_fresh_database(postgres_url):
    import psycopg

    name = postgres_url.rsplit("/", 1)[1]
    assert name.startswith("sfsync_test_")
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = 'public'").fetchone()[0]
        assert tables == 0
        conn.execute("CREATE TABLE t (id int)")
    with psycopg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres") as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    _created.append(name)


def test_previous_database_was_dropped(postgres_url):
    import psycopg

    if not _created:
        pytest.fail("run together with test_postgres_url_is_a_fresh_database (it creates the database)")
    with psycopg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres") as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (_created[-1],)).fetchone()
        assert row is None
