"""Migrations give up on a lock they wait for too long, and on a statement that runs too long, changing nothing."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from app.cli import main
from app.migrations.lock import MIGRATION_LOCK_KEY
from app.migrations.revisions import VERSIONS_DIR, alembic_config
from app.migrations.timeouts import MigrationTimeoutError
from tests.support.databases import HEAD, Databases, another_transaction


@pytest.fixture
def at_0001(pg: Databases, empty_db: str) -> str:
    """A database one revision behind head: `migrate` has work to do."""
    command.upgrade(alembic_config(pg.settings(empty_db), configure_logging=False), "0001")
    return empty_db


@pytest.fixture
def other_session(pg: Databases, at_0001: str) -> Iterator[sa.Connection]:
    """Another client in autocommit mode, so each query sees fresh activity."""
    with another_transaction(pg, at_0001) as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


def schema_state(pg: Databases, db: str) -> tuple[list[str], list[str]]:
    version = [row[0] for row in pg.query(db, "SELECT version_num FROM alembic_version")]
    query = "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' ORDER BY 1"
    return version, [row[0] for row in pg.query(db, query)]


def test_migrate_behind_a_held_lock_fails_fast_and_changes_nothing(
    pg: Databases, at_0001: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = schema_state(pg, at_0001)
    settings = pg.settings(at_0001, migration_lock_timeout=1, backup_dir=tmp_path)
    with another_transaction(pg, at_0001) as holder:
        # Without lock_timeout the migration would wait: the server then ends this transaction, and the test fails.
        holder.execute(sa.text("SET idle_in_transaction_session_timeout = '20s'"))
        holder.execute(sa.text("LOCK TABLE users IN ACCESS SHARE MODE"))  # a long read, say a report
        started = time.monotonic()
        assert main(["migrate"], settings=settings) == 1
        took = time.monotonic() - started
    err = capsys.readouterr().err
    assert "waited more than 1 s for a lock on table users" in err
    assert "nothing was changed" in err
    assert "when that transaction has ended" in err
    assert "Traceback" not in err
    assert took < 10
    assert schema_state(pg, at_0001) == before
    # Once the other transaction is gone, the same command goes through.
    assert main(["migrate"], settings=settings) == 0
    assert schema_state(pg, at_0001)[0] == [HEAD]


def test_waiting_for_another_migration_is_not_cut_by_lock_timeout(
    pg: Databases, at_0001: str, other_session: sa.Connection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock_timeout = 0.2
    settings = pg.settings(at_0001, migration_lock_timeout=lock_timeout, backup_dir=tmp_path)
    other_session.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    result: list[int] = []
    migrating = threading.Thread(target=lambda: result.append(main(["migrate"], settings=settings)))
    migrating.start()
    try:
        deadline = time.monotonic() + 30
        while "waits for another migration, reset or restore of this database" not in capsys.readouterr().err:
            assert time.monotonic() < deadline, "the migration never queued behind the migration lock"
            assert migrating.is_alive(), f"the migration did not wait for the other one: {result}"
            time.sleep(0.02)
        queued_at = time.monotonic()
        while time.monotonic() - queued_at < 3 * lock_timeout:  # well past lock_timeout, still queued
            assert migrating.is_alive(), f"the migration gave up waiting for the other one: {result}"
            time.sleep(0.02)
        assert schema_state(pg, at_0001)[0] == ["0001"]
    finally:
        other_session.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        migrating.join(timeout=60)
    assert result == [0]
    assert schema_state(pg, at_0001)[0] == [HEAD]


def test_a_statement_running_too_long_is_cancelled(pg: Databases, api_db: str, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    slow = "UPDATE users SET full_name = full_name WHERE pg_sleep(30) IS NOT NULL"
    (versions / "0900_slow.py").write_text(
        f'from alembic import op\n\nrevision = "0900"\ndown_revision = "{HEAD}"\n\n\n'
        f"def upgrade() -> None:\n    op.execute({slow!r})\n"
    )
    config = alembic_config(pg.settings(api_db, migration_statement_timeout=0.3), configure_logging=False)
    config.set_main_option("version_locations", str(versions))
    pg.add_user(api_db, "ann")
    started = time.monotonic()
    with pytest.raises(MigrationTimeoutError, match=r"statement on table users ran longer than 0.3 s"):
        command.upgrade(config, "head")
    assert time.monotonic() - started < 10
    assert schema_state(pg, api_db)[0] == [HEAD]
