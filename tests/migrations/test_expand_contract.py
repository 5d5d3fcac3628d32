"""Releases side by side on one schema: an older release runs on a newer one's expand revisions, refuses its contract
ones, and a newer release runs with its own contract revisions still pending."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import traceback
import uuid
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
from tests.support.revisions import ADD_NICKNAME, DROP_PHONE, write_revisions


def newer_release(tmp_path: Path, settings: Settings, *revisions: str) -> Config:
    """The Alembic configuration of a release with `revisions` (their files) after this checkout's."""
    versions = tmp_path / "newer"
    if not versions.exists():
        shutil.copytree(VERSIONS_DIR, versions, ignore=shutil.ignore_patterns("__pycache__"))
    write_revisions(versions, *revisions)
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
        ("0006", "0005", "expand"),
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


async def instances(pg: Databases, db: str) -> list[tuple[str, str, int]]:
    rows = await pg.fetch(db, "SELECT heads, host, pid FROM api_instances WHERE expires_at > now()")
    return [tuple(row) for row in rows]


async def test_a_running_instance_is_registered_until_it_stops(pg: Databases, api_db: str) -> None:
    settings = pg.settings(api_db, **FAST_HASHING, instance_heartbeat_seconds=0.2)
    async with AsyncTestClient(create_app(settings)):
        assert await instances(pg, api_db) == [(HEAD, socket.gethostname(), os.getpid())]
        # Its row gone (an outage longer than three beats, say): the next beat puts it back.
        await pg.fetch(api_db, "DELETE FROM api_instances")
        async with asyncio.timeout(10):
            while not await instances(pg, api_db):  # noqa: ASYNC110  (polling another process's writes)
                await asyncio.sleep(0.05)
    assert await pg.fetch(api_db, "SELECT 1 FROM api_instances") == []


async def test_a_contract_revision_waits_for_the_instances_of_older_releases(
    pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(api_db, **FAST_HASHING)
    older = f"release at {HEAD} on {socket.gethostname()} (pid {os.getpid()})"
    async with AsyncTestClient(create_app(settings)):  # this release, serving: older than the next one's contract
        with monkeypatch.context() as newer:
            as_newer_release(newer, newer_release(tmp_path, settings, ADD_NICKNAME, DROP_PHONE))
            assert await command(["migrate"], settings) == 0
            said = capsys.readouterr().out
            assert f"Contract revision 0901 waits for the rollout: older instances still run ({older})" in said
            assert await version(pg, api_db) == ["0900"]
            assert "phone_number" in await columns(pg, api_db)
            assert await command(["current"], settings) == 0
            said = capsys.readouterr().out
            assert f"Live instances: {older}." in said
            assert f"Contract revision 0901: waits for {older} to stop; `just migrate` applies it then." in said
            assert await command(["migrate", "--wait", "0.5"], settings) == 1
            assert "error: after 0.5 s: Contract revision 0901 waits for the rollout" in capsys.readouterr().err
    # This release stopped, and left the registry: the contract revision applies.
    with monkeypatch.context() as newer:
        as_newer_release(newer, newer_release(tmp_path, settings))
        assert await command(["migrate"], settings) == 0
    assert await version(pg, api_db) == ["0901"]
    assert "phone_number" not in await columns(pg, api_db)


async def test_an_instance_that_stopped_beating_holds_nothing_back(
    pg: Databases, api_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = pg.settings(api_db)
    as_newer_release(monkeypatch, newer_release(tmp_path, settings, ADD_NICKNAME, DROP_PHONE))
    # Killed without a word a moment ago: its row is there until its heartbeat expires, a second from now.
    gone = "INSERT INTO api_instances (id, heads, host, pid, expires_at) VALUES ($1, $2, 'gone', 1, now() + '1 s')"
    await pg.fetch(api_db, gone, uuid.uuid4(), HEAD)
    assert await command(["migrate", "--wait", "30"], settings) == 0
    assert await version(pg, api_db) == ["0901"]


@pytest.mark.slow
def test_plain_alembic_holds_a_waiting_contract_revision_back(pg: Databases, api_db: str, project_copy: Path) -> None:
    write_revisions(project_copy / "alembic" / "versions", ADD_NICKNAME, DROP_PHONE)
    still_here = "INSERT INTO api_instances (id, heads, host, pid, expires_at) VALUES ($1, $2, 'h', 1, now() + '1 h')"
    pg.query(api_db, still_here, uuid.uuid4(), HEAD)
    env = {**pg.env(api_db), "PYTHONPATH": str(project_copy)}
    upgrade = [sys.executable, "-m", "alembic", "upgrade", "head"]
    result = subprocess.run(upgrade, cwd=project_copy, env=env, capture_output=True, text=True, check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAILED: Contract revision 0901 waits for the rollout: older instances still run" in said
    assert "Traceback" not in said
    assert pg.query(api_db, "SELECT version_num FROM alembic_version")[0][0] == HEAD
    # Up to the revision before it: what an operator does by hand, and what `just migrate` does by itself.
    result = subprocess.run([*upgrade[:-1], "0900"], cwd=project_copy, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
