"""`reset` drops the API's tables and version table, and nothing else anywhere."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.cli import main
from tests.support.databases import API_TABLES, Databases, another_transaction


def public_tables(pg: Databases, db: str) -> set[str]:
    rows = pg.query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    return {row[0] for row in rows}


def test_reset_drops_only_the_api_tables(
    pg: Databases, api_db: str, empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.query(api_db, "CREATE TABLE analytics_notes (id int PRIMARY KEY)")
    pg.query(empty_db, "CREATE TABLE users (id int PRIMARY KEY)")  # same name, other database
    assert main(["reset", "--yes"], settings=pg.settings(api_db)) == 0
    assert (
        "alembic_version, api_instances, refresh_tokens, roles, user_roles, user_sessions, users"
        in capsys.readouterr().out
    )
    assert public_tables(pg, api_db) == {"analytics_notes"}
    assert public_tables(pg, empty_db) == {"users"}
    assert main(["init"], settings=pg.settings(api_db)) == 0


def test_reset_without_confirmation_drops_nothing(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No --yes and no terminal to ask on (pytest's stdin is none).
    assert main(["reset"], settings=pg.settings(api_db)) == 1
    assert "just reset --yes" in capsys.readouterr().err
    assert public_tables(pg, api_db) == API_TABLES


def test_reset_refuses_to_break_a_foreign_reference(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.query(api_db, "CREATE TABLE rentals (id int PRIMARY KEY, user_id int REFERENCES users (id))")
    assert main(["reset", "--yes"], settings=pg.settings(api_db)) == 1
    assert "rentals" in capsys.readouterr().err
    assert "users" in public_tables(pg, api_db)


def test_reset_behind_a_held_lock_fails_fast_and_drops_nothing(
    pg: Databases, api_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, migration_lock_timeout=1, backup_dir=tmp_path)
    before = public_tables(pg, api_db)
    with another_transaction(pg, api_db) as holder:
        # Without lock_timeout the reset would wait: the server then ends this transaction, and the test fails.
        holder.execute(sa.text("SET idle_in_transaction_session_timeout = '20s'"))
        holder.execute(sa.text("LOCK TABLE users IN ACCESS SHARE MODE"))  # a long read, say a report
        started = time.monotonic()
        assert main(["reset", "--yes"], settings=settings) == 1
        took = time.monotonic() - started
    err = capsys.readouterr().err
    assert "the reset waited more than 1 s for a lock on table users" in err
    assert "nothing was changed" in err
    assert "Traceback" not in err
    assert took < 10
    assert public_tables(pg, api_db) == before
