"""The backfill helper: a column filled in batches, each committed on its own, resumed where a stopped run left off."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic.config import Config

from app.cli import main
from app.cli.context import CommandContext
from app.migrations.revisions import VERSIONS_DIR, alembic_config
from tests.support.databases import Databases, another_transaction
from tests.support.revisions import ADD_NICKNAME, revision_file, write_revisions

FILL = revision_file(
    "0901",
    "0900",
    """\
    with op.get_context().autocommit_block():
        backfill("users", "nickname", "'rider ' || username || ' ' || id", batch_size=7)""",
    message="Fill nickname",
)
ROWS = 100


@pytest.fixture
def with_backfill(pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's revisions plus a nullable column and its backfill; the users table holds ROWS users."""
    versions = tmp_path / "versions"
    shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    write_revisions(versions, ADD_NICKNAME, FILL)

    def with_versions(context: CommandContext) -> Config:
        config = alembic_config(context.settings, configure_logging=False)
        config.set_main_option("version_locations", str(versions))
        return config

    monkeypatch.setattr(CommandContext, "alembic", with_versions)
    users = "SELECT 'u' || n, n || '@example.com', 'not a hash' FROM generate_series(1, $1) n"
    pg.query(api_db, f"INSERT INTO users (username, email, hashed_password) {users}", ROWS)
    return versions


def nicknames(pg: Databases, db: str) -> dict[str, str | None]:
    return {row[0]: row[1] for row in pg.query(db, "SELECT username, nickname FROM users")}


def test_a_backfill_fills_every_null_in_batches_and_leaves_set_values(
    pg: Databases, api_db: str, with_backfill: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db)
    assert main(["migrate", "0900"], settings=settings) == 0
    pg.query(api_db, "UPDATE users SET nickname = 'chosen' WHERE username = 'u5'")
    assert main(["migrate"], settings=settings) == 0
    filled = nicknames(pg, api_db)
    assert filled.pop("u5") == "chosen"
    assert filled == {f"u{n}": f"rider u{n} {n}" for n in range(1, ROWS + 1) if n != 5}
    assert f"Running backfill of users.nickname: {ROWS - 1} of {ROWS - 1} rows (100%)" in capfd.readouterr().err


def test_a_stopped_backfill_goes_on_where_it_stopped(
    pg: Databases, api_db: str, with_backfill: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, migration_lock_timeout=0.5)
    assert main(["migrate", "0900"], settings=settings) == 0
    with another_transaction(pg, api_db) as holder:
        # A writer holds one row in the middle: the batch that reaches it gives up after the lock time-out.
        holder.exec_driver_sql("SELECT 1 FROM users WHERE username = 'u50' FOR UPDATE")
        assert main(["migrate"], settings=settings) == 1
        said = capsys.readouterr().err
        assert "waited more than 0.5 s for a lock on table users" in said, said
        partly = nicknames(pg, api_db)
    done = [name for name, nickname in partly.items() if nickname is not None]
    assert 0 < len(done) < ROWS  # the batches before it stayed committed
    assert [row[0] for row in pg.query(api_db, "SELECT version_num FROM alembic_version")] == ["0900"]
    assert main(["migrate"], settings=settings) == 0
    assert set(nicknames(pg, api_db).values()) == {f"rider u{n} {n}" for n in range(1, ROWS + 1)}
    assert [row[0] for row in pg.query(api_db, "SELECT version_num FROM alembic_version")] == ["0901"]


def test_the_sql_of_a_backfill_shows_one_batch(
    pg: Databases, with_backfill: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sql"], settings=pg.settings(pg.new_name("never_created"))) == 0
    said = capsys.readouterr().out
    assert "/* backfill users.nickname: this statement, batch after batch, each committed on its own */" in said
    assert """UPDATE "users" SET "nickname" = 'rider ' || username || ' ' || id FROM batch""" in said
    assert "LIMIT 7" in said
