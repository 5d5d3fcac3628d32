"""Revisions that build an index concurrently, in an autocommit block, as the migration lint advises."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from app.db.engine import MIGRATION_APPLICATION_NAME
from app.migrations.lint import ADVICE
from app.migrations.lock import MIGRATION_LOCK_KEY
from app.migrations.revisions import VERSIONS_DIR, alembic_config
from tests.support.databases import HEAD, Databases

INDEX = "ix_users_full_name"


def pasted(rule: str) -> str:
    """The code in the lint's advice for `rule`, as a person pastes it into a revision, for our column."""
    code = textwrap.dedent(ADVICE[rule].split(":\n", 1)[1])
    return textwrap.indent(code.replace("ix_users_city", INDEX).replace('"city"', '"full_name"'), "    ")


CONCURRENT_INDEX_REVISION = f'''"""Index users by full name."""

from alembic import op

revision = "0900"
down_revision = "{HEAD}"


def upgrade() -> None:
{pasted("require-concurrent-index-creation")}


def downgrade() -> None:
{pasted("require-concurrent-index-deletion")}
'''
# The service's startup hook, in a process of its own, as `just serve` runs it.
START_SERVICE = (
    "from litestar.testing import TestClient\n"
    "from app.http.app import create_app\n"
    "with TestClient(create_app()) as client:\n"
    "    assert client.get('/health').status_code == 200\n"
)


@pytest.fixture
def project(project_copy: Path) -> Path:
    """A copy of the project with one more revision: a concurrent index build."""
    (project_copy / "alembic" / "versions" / "0900_index_users_by_full_name.py").write_text(CONCURRENT_INDEX_REVISION)
    return project_copy


def run(project: Path, pg: Databases, db: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**pg.env(db), "PYTHONPATH": str(project), "BACKUP_DIR": str(project / "backups"), **env}
    return subprocess.run(
        [sys.executable, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def index_state(pg: Databases, db: str) -> str:
    """'valid', 'INVALID' or 'missing'."""
    query = "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE i.relname = $1"
    rows = pg.query(db, query, INDEX)
    return "missing" if not rows else ("valid" if rows[0][0] else "INVALID")


def version(pg: Databases, db: str) -> list[str]:
    return [row[0] for row in pg.query(db, "SELECT version_num FROM alembic_version")]


@pytest.mark.slow
def test_the_lints_advice_runs_on_every_path(pg: Databases, empty_db: str, project: Path) -> None:
    steps = [
        (["-m", "app", "migrate"], "valid"),
        (["-m", "alembic", "downgrade", "-1"], "missing"),
        (["-m", "alembic", "upgrade", "head"], "valid"),
        (["-m", "app", "downgrade"], "missing"),
        (["-c", START_SERVICE], "valid"),
    ]
    for args, expected in steps:
        result = run(project, pg, empty_db, *args)
        assert result.returncode == 0, f"{args}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert index_state(pg, empty_db) == expected, args
    assert version(pg, empty_db) == ["0900"]


@pytest.mark.slow
def test_migrations_started_together_take_turns(
    pg: Databases, api_db: str, project: Path, other_session: sa.Connection
) -> None:
    pg.add_user(api_db, "ann")
    environment = {**pg.env(api_db), "PYTHONPATH": str(project), "BACKUP_DIR": str(project / "backups")}
    commands = [["-m", "app", "migrate"], ["-m", "app", "migrate"], ["-m", "alembic", "upgrade", "head"]]
    commands.append(["-c", START_SERVICE])
    # Held here until all four queue: then they start at the same moment, and each backs up, builds or waits.
    other_session.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    running = [
        subprocess.Popen(
            [sys.executable, *args], cwd=project, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for args in commands
    ]
    try:
        queued = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND application_name = :name")
        deadline = time.monotonic() + 60
        while other_session.execute(queued, {"db": api_db, "name": MIGRATION_APPLICATION_NAME}).scalar_one() < 4:
            assert time.monotonic() < deadline, "the four did not all queue for the migration lock"
            assert all(process.poll() is None for process in running), "one gave up instead of waiting"
            time.sleep(0.05)
        other_session.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        for process in running:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err.decode()
    finally:
        for process in running:
            process.kill()
            process.wait()
    assert index_state(pg, api_db) == "valid"
    assert version(pg, api_db) == ["0900"]
    # A `just migrate` backs up when it has work to do: only the first one can (and alembic and startup never do).
    assert len(list((project / "backups").glob("*.dump"))) <= 1


@pytest.fixture
def other_session(pg: Databases, api_db: str) -> Iterator[sa.Connection]:
    """Another client in autocommit mode."""
    engine = sa.create_engine(pg.psycopg_url(api_db), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")
    finally:
        engine.dispose()


@pytest.fixture
def open_write(pg: Databases, api_db: str) -> Iterator[sa.Connection]:
    """A transaction of another client that wrote to users and has not committed yet."""
    engine = sa.create_engine(pg.psycopg_url(api_db), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SET idle_in_transaction_session_timeout = '60s'"))
            connection.execute(sa.text("INSERT INTO users (username, email, hashed_password) VALUES ('w', 'w@x', 'x')"))
            yield connection
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_stopped_build_is_reported_then_rebuilt(
    pg: Databases, api_db: str, project: Path, open_write: sa.Connection
) -> None:
    # The build waits for the open write; lock_timeout holds inside the autocommit block and stops it.
    started = time.monotonic()
    failed = run(project, pg, api_db, "-m", "app", "migrate", MIGRATION_LOCK_TIMEOUT="1")
    assert time.monotonic() - started < 20
    assert failed.returncode == 1
    assert "waited more than 1 s for a lock on table users" in failed.stderr
    assert "the index it was building is left INVALID, and the next `just migrate` rebuilds it" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert index_state(pg, api_db) == "INVALID"
    assert version(pg, api_db) == [HEAD]
    open_write.rollback()

    said = f"index {INDEX} on table users is INVALID: a concurrent build stopped before it finished"
    current = run(project, pg, api_db, "-m", "app", "current")
    assert current.returncode == 0
    assert said in current.stderr
    assert f'`just migrate` rebuilds it (REINDEX INDEX CONCURRENTLY "{INDEX}")' in current.stderr
    check = run(project, pg, api_db, "-m", "app", "check")
    assert check.returncode == 1
    assert said in check.stderr

    migrated = run(project, pg, api_db, "-m", "app", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f'Running REINDEX INDEX CONCURRENTLY "{INDEX}"' in migrated.stderr
    assert index_state(pg, api_db) == "valid"
    assert version(pg, api_db) == ["0900"]
    assert said not in run(project, pg, api_db, "-m", "app", "current").stderr


def test_time_outs_hold_inside_an_autocommit_block(pg: Databases, api_db: str, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    probe = (
        "CREATE TABLE {name} AS "
        "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS statement"
    )
    (versions / "0900_probe.py").write_text(
        f'from alembic import op\n\nrevision = "0900"\ndown_revision = "{HEAD}"\n\n\n'
        "def upgrade() -> None:\n"
        f"    op.execute({probe.format(name='before')!r})\n"
        "    with op.get_context().autocommit_block():\n"
        f"        op.execute({probe.format(name='inside')!r})\n"
        f"    op.execute({probe.format(name='after')!r})\n"
    )
    settings = pg.settings(
        api_db, migration_lock_timeout=3, migration_statement_timeout=7, migration_concurrent_timeout=90
    )
    config = alembic_config(settings, configure_logging=False)
    config.set_main_option("version_locations", str(versions))
    command.upgrade(config, "head")
    seen = {
        name: tuple(pg.query(api_db, f"SELECT lock, statement FROM {name}")[0])
        for name in ("before", "inside", "after")
    }
    assert seen == {"before": ("3s", "7s"), "inside": ("3s", "90s"), "after": ("3s", "7s")}
