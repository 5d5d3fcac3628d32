"""Releases side by side on one schema: an older release runs on a newer one's expand revisions, refuses its contract
ones, and a newer release runs with its own contract revisions still pending."""

from __future__ import annotations

import asyncio
import shutil
import traceback
from pathlib import Path

import pytest
from alembic.config import Config
from litestar.testing import AsyncTestClient

from app.cli import main
from app.cli.context import CommandContext
from app.db.engine import api_connection
from app.http.app import create_app
from app.migrations.guard import require_compatible
from app.migrations.revisions import VERSIONS_DIR, Revisions, alembic_config
from app.settings import Settings
from tests.support.databases import FAST_HASHING, HEAD, Databases

REVISION = '''"""{message}"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{parent}"
phase = "{phase}"


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''
# The next release adds a column (expand); the one after stops using phone_number and drops it (contract).
ADD_NICKNAME = {
    "revision": "0900",
    "parent": HEAD,
    "phase": "expand",
    "message": "Add nickname",
    "upgrade": 'op.add_column("users", sa.Column("nickname", sa.String(30), nullable=True))',
    "downgrade": 'op.drop_column("users", "nickname")',
}
DROP_PHONE = {
    "revision": "0901",
    "parent": "0900",
    "phase": "contract",
    "message": "Drop phone_number",
    "upgrade": 'op.drop_column("users", "phone_number")  # squawk-ignore: ban-drop-column',
    "downgrade": 'op.add_column("users", sa.Column("phone_number", sa.String(20), nullable=True))',
}


def newer_release(tmp_path: Path, settings: Settings, *revisions: dict[str, str]) -> Config:
    """The Alembic configuration of a release with `revisions` after this checkout's."""
    versions = tmp_path / "newer"
    if not versions.exists():
        shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    for revision in revisions:
        (versions / f"{revision['revision']}_next.py").write_text(REVISION.format(**revision))
    config = alembic_config(settings, configure_logging=False)
    config.set_main_option("version_locations", str(versions))
    return config


def as_newer_release(monkeypatch: pytest.MonkeyPatch, config: Config) -> None:
    """Commands run from here on as the newer release's would."""
    monkeypatch.setattr(CommandContext, "alembic", lambda self: config)


async def command(args: list[str], settings: Settings) -> int:
    """`python -m app ARGS` in this process, off the test's event loop (the CLI runs one of its own)."""
    return await asyncio.to_thread(main, args, settings=settings)


async def version(pg: Databases, db: str) -> list[str]:
    return [row[0] for row in await pg.fetch(db, "SELECT version_num FROM alembic_version")]


async def columns(pg: Databases, db: str) -> set[str]:
    query = "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'"
    return {row[0] for row in await pg.fetch(db, query)}


async def test_an_older_release_runs_on_a_newer_releases_expand_revisions(
    pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, **FAST_HASHING)
    with monkeypatch.context() as newer:
        as_newer_release(newer, newer_release(tmp_path, settings, ADD_NICKNAME))
        assert await command(["migrate"], settings) == 0
    assert await version(pg, api_db) == ["0900"]
    lineage = await pg.fetch(api_db, "SELECT parents, phase FROM alembic_checksums WHERE revision = '0900'")
    assert [tuple(row) for row in lineage] == [(HEAD, "expand")]
    capsys.readouterr()

    # This checkout is now the older release: it lacks 0900's file, and runs on its schema all the same.
    ahead = f"0900, ahead of this release's head {HEAD} through a newer release's expand revision 0900"
    for migrate_on_startup in (False, True):
        app = create_app(settings.model_copy(update={"migrate_on_startup": migrate_on_startup}))
        async with AsyncTestClient(app) as client:
            ready = await client.get("/health/ready")
            assert (ready.status_code, ready.json()["schema"]) == (200, ahead)
            body = {
                "username": f"rider{migrate_on_startup}",
                "email": f"r{migrate_on_startup}@x.io",
                "password": "p" * 8,
            }
            assert (await client.post("/api/v1/register", json=body)).status_code == 201
    assert await version(pg, api_db) == ["0900"]  # startup's migration had nothing to apply, and took nothing back
    assert await command(["current"], settings) == 0
    assert f"API database '{api_db}': {ahead}" in capsys.readouterr().out
    assert await command(["migrate"], settings) == 0
    assert "nothing to apply: a newer release migrated the database" in capsys.readouterr().out
    assert await command(["seed"], settings) == 0
    assert await command(["downgrade"], settings) == 1
    assert "use the newer release's commands" in capsys.readouterr().err
    assert await version(pg, api_db) == ["0900"]


async def test_an_older_release_stops_serving_once_a_newer_release_contracts(
    pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pg.settings(api_db, **FAST_HASHING)
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await client.get("/health/ready")).status_code == 200
        with monkeypatch.context() as newer:
            as_newer_release(newer, newer_release(tmp_path, settings, ADD_NICKNAME, DROP_PHONE))
            assert await command(["migrate", "--force-contract"], settings) == 0
        assert "phone_number" not in await columns(pg, api_db)
        ready = await client.get("/health/ready")
        said = "a newer release's contract revision 0901 is applied: it removed or changed what this release's code"
        assert ready.status_code == 503
        assert said in ready.json()["schema"]
    with pytest.raises(BaseException) as refused:  # noqa: PT011  (the test client wraps it in a group)
        async with AsyncTestClient(create_app(settings.model_copy(update={"migrate_on_startup": False}))):
            pass
    assert f"database '{api_db}' is at 0901, not at the newest migration ({HEAD}); {said}" in "".join(
        traceback.format_exception(refused.value)
    )


async def test_a_release_runs_with_its_contract_revisions_pending(
    pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db)
    config = newer_release(tmp_path, settings, ADD_NICKNAME, DROP_PHONE)
    as_newer_release(monkeypatch, config)
    assert await command(["migrate", "--expand-only"], settings) == 0
    said = capsys.readouterr().out
    assert "Contract revision 0901 left for after the rollout (--expand-only): then run `just migrate`." in said
    assert f"API database '{api_db}': 0900, contract revision 0901 pending: applied once no older release runs" in said
    assert await version(pg, api_db) == ["0900"]
    assert "phone_number" in await columns(pg, api_db)

    async with api_connection(settings) as connection:
        state = await connection.run_sync(require_compatible, Revisions(config), None)
    assert state.pending_in("contract") == ["0901"]
    # With no older instance left (none registered here), the next migrate applies the contract revision.
    assert await command(["migrate"], settings) == 0
    assert await version(pg, api_db) == ["0901"]
    assert "phone_number" not in await columns(pg, api_db)


def test_the_lineage_of_revisions_applied_before_it_was_kept_is_filled_in(pg: Databases, api_db: str) -> None:
    pg.query(api_db, "ALTER TABLE alembic_checksums DROP COLUMN parents, DROP COLUMN phase")
    assert main(["migrate"], settings=pg.settings(api_db)) == 0
    rows = pg.query(api_db, "SELECT revision, parents, phase FROM alembic_checksums ORDER BY revision")
    assert [tuple(row) for row in rows] == [
        ("0001", "", "expand"),
        ("0002", "0001", "expand"),
        ("0003", "0002", "expand"),
        ("0004", "0003", "expand"),
        ("0005", "0004", "expand"),
    ]


def test_an_unknown_revision_without_this_projects_lineage_is_still_refused(
    pg: Databases, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Recorded, but not chained to any revision of this checkout: another project's history.
    recorded = "('abc123', repeat('0', 64), 'x.py', now(), 'def456', 'expand')"
    pg.query(api_db, f"INSERT INTO alembic_checksums VALUES {recorded}")
    pg.query(api_db, "UPDATE alembic_version SET version_num = 'abc123'")
    assert main(["current"], settings=pg.settings(api_db)) == 1
    assert "revision abc123, which is not one of this project's migrations" in capsys.readouterr().err
