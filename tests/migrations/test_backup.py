"""Backups before a command changes the API database, and restores that refuse anyone else's dump."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from alembic import command

from app.cli import main
from app.db.pg_tools import pg_env, pg_tool
from app.db.server import embedded_bin_dir
from app.errors import SetupError
from app.migrations.restore import fit_for_server
from app.migrations.revisions import alembic_config
from app.settings import Settings
from tests.support.databases import HEAD, OLDER_SERVER_URL, Databases

ALL_REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006"]
BEFORE_HEAD = ALL_REVISIONS[-2]


def users(pg: Databases, db: str) -> list[str]:
    return [row[0] for row in pg.query(db, "SELECT username FROM users ORDER BY id")]


def version(pg: Databases, db: str) -> list[str]:
    return [row[0] for row in pg.query(db, "SELECT version_num FROM alembic_version")]


def whole_database_dump(settings: Settings, folder: Path) -> Path:
    """A pg_dump of a whole database, as a DBA (or this project before it dumped only its own tables) takes one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{settings.api_db_name}-whole.dump"
    subprocess.run([pg_tool("pg_dump"), "--format=custom", f"--file={path}"], env=pg_env(settings), check=True)
    return path


def archives(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.dump"))


@pytest.fixture
def settings(pg: Databases, api_db: str, tmp_path: Path) -> Settings:
    return pg.settings(api_db, backup_dir=tmp_path / "backups")


def test_backup_names_the_database_time_and_revision(
    settings: Settings, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup"], settings=settings) == 0
    (name,) = archives(settings.backup_dir)
    assert name.startswith(f"{api_db}-")
    assert name.endswith(f"-{HEAD}.dump")
    assert f"Backed up '{api_db}' to " in capsys.readouterr().out


def test_downgrade_backs_up_first_and_restore_brings_it_all_back(
    pg: Databases, settings: Settings, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.add_user(api_db, "ann")
    assert main(["downgrade"], settings=settings) == 0
    (taken,) = archives(settings.backup_dir)
    assert f"Backed up '{api_db}' to " in capsys.readouterr().out
    assert version(pg, api_db) == [BEFORE_HEAD]
    pg.add_user(api_db, "bob")
    pg.query(api_db, "CREATE TABLE analytics_notes (id int PRIMARY KEY)")  # not the API's: left alone
    assert main(["restore", "--yes"], settings=settings) == 0  # the newest archive
    out = capsys.readouterr().out
    assert f"Restored '{api_db}' from " in out
    assert f"{taken}." in out
    assert f"API database '{api_db}': {HEAD} (head)" in out
    assert version(pg, api_db) == [HEAD]
    assert users(pg, api_db) == ["ann"]
    assert {row[0] for row in pg.query(api_db, "SELECT revision FROM alembic_checksums")} == set(ALL_REVISIONS)
    assert pg.query(api_db, "SELECT to_regclass('analytics_notes') IS NOT NULL")[0][0]
    # The state before the restore was kept too: restoring the newest archive again undoes the restore.
    assert len(archives(settings.backup_dir)) == 2
    assert main(["restore", "--yes"], settings=settings) == 0
    assert (version(pg, api_db), users(pg, api_db)) == ([BEFORE_HEAD], ["ann", "bob"])
    head_only = "SELECT to_regclass('api_instances') IS NULL"  # a table head adds
    assert pg.query(api_db, head_only)[0][0]  # exactly the schema before head, not head's with old rows


def test_a_failed_restore_changes_nothing(
    pg: Databases, settings: Settings, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup"], settings=settings) == 0
    pg.add_user(api_db, "ann")
    pg.query(api_db, "CREATE TABLE rentals (id int PRIMARY KEY, user_id int REFERENCES users (id))")
    assert main(["restore", "--yes"], settings=settings.model_copy(update={"auto_backup": False})) == 1
    err = capsys.readouterr().err
    assert "failed and changed nothing" in err
    assert "cannot drop table users because other objects depend on it" in err
    assert users(pg, api_db) == ["ann"]


def test_migrate_backs_up_only_a_database_with_rows_and_something_to_do(
    pg: Databases, empty_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(empty_db, backup_dir=tmp_path)
    command.upgrade(alembic_config(settings, configure_logging=False), "0001")
    assert main(["migrate"], settings=settings) == 0  # no rows
    assert main(["downgrade"], settings=settings) == 0
    pg.add_user(empty_db, "ann")
    assert main(["migrate"], settings=settings.model_copy(update={"auto_backup": False})) == 0
    assert archives(tmp_path) == []
    assert main(["downgrade"], settings=settings) == 0
    assert main(["migrate"], settings=settings) == 0
    assert main(["migrate"], settings=settings) == 0  # at head: nothing to back up for
    assert [name.rsplit("-", 1)[1] for name in archives(tmp_path)] == [f"{HEAD}.dump", f"{BEFORE_HEAD}.dump"]
    out = capsys.readouterr().out
    assert "before downgrading" in out
    assert "before migrating" in out


def test_a_failed_backup_stops_the_command_before_it_changes_anything(
    pg: Databases, api_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_folder = tmp_path / "backups"
    not_a_folder.write_text("")
    pg.add_user(api_db, "ann")
    settings = pg.settings(api_db, backup_dir=not_a_folder)
    for args in (["downgrade"], ["reset", "--yes"]):
        assert main(args, settings=settings) == 1
        err = capsys.readouterr().err
        assert f"cannot keep backups in {not_a_folder}" in err
        assert "stopped before changing anything" in err
        assert "AUTO_BACKUP=false" in err
    assert (version(pg, api_db), users(pg, api_db)) == ([HEAD], ["ann"])


def test_only_the_newest_backups_are_kept(settings: Settings) -> None:
    settings = settings.model_copy(update={"backup_keep": 2})
    for _ in range(3):
        assert main(["backup"], settings=settings) == 0
    assert len(archives(settings.backup_dir)) == 2


def test_automatic_backups_keep_only_backup_keep_archives(pg: Databases, settings: Settings, api_db: str) -> None:
    settings = settings.model_copy(update={"backup_keep": 1})
    pg.add_user(api_db, "ann")
    assert main(["downgrade"], settings=settings) == 0
    assert main(["migrate"], settings=settings) == 0
    (kept,) = archives(settings.backup_dir)
    assert kept.endswith(f"-{BEFORE_HEAD}.dump")  # the newest: taken before migrating


def test_restore_keeps_the_archive_it_restores_whatever_backup_keep_says(
    pg: Databases, settings: Settings, api_db: str
) -> None:
    settings = settings.model_copy(update={"backup_keep": 1})
    assert main(["backup"], settings=settings) == 0
    (restored,) = archives(settings.backup_dir)
    pg.add_user(api_db, "ann")
    assert main(["restore", "--yes"], settings=settings) == 0  # backs up ann first: one archive too many
    assert users(pg, api_db) == []
    assert restored in archives(settings.backup_dir)
    assert len(archives(settings.backup_dir)) == 2


def test_backup_uses_the_pg_dump_of_the_embedded_servers_wheel(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /usr/bin/pg_dump may be older than the server: it would refuse to dump it, or only on some machines.
    run = subprocess.run
    tools: list[Path] = []

    def spy(command: list[str], **kwargs: Any) -> Any:
        tools.append(Path(command[0]))
        return run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    assert main(["backup"], settings=settings) == 0
    assert [tool for tool in tools if tool.name == "pg_dump"] == [embedded_bin_dir() / "pg_dump"]


def test_restore_without_a_terminal_or_yes_changes_nothing(
    pg: Databases, settings: Settings, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup"], settings=settings) == 0
    pg.add_user(api_db, "ann")
    assert main(["restore"], settings=settings) == 1
    assert "needs confirmation: add --yes" in capsys.readouterr().err
    assert users(pg, api_db) == ["ann"]


def test_restore_refuses_a_dump_of_another_database(
    pg: Databases, settings: Settings, api_db: str, empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other = whole_database_dump(pg.settings(empty_db), settings.backup_dir)
    pg.add_user(api_db, "ann")
    assert main(["restore", "--yes", str(other)], settings=settings) == 1
    err = capsys.readouterr().err
    assert f"is a dump of database '{empty_db}', not of the API database '{api_db}'; nothing was restored" in err
    assert users(pg, api_db) == ["ann"]


@pytest.mark.slow
def test_restore_refuses_mlflows_dump(
    pg: Databases, settings: Settings, api_db: str, mlflow_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    dump = whole_database_dump(pg.settings(mlflow_db), settings.backup_dir)
    pg.add_user(api_db, "ann")
    # Whether MLflow's database is named in POSTGRES_DB, or recognised by its tables under the API's name.
    for target in (settings.model_copy(update={"postgres_db": mlflow_db}), pg.settings(mlflow_db)):
        assert main(["restore", "--yes", str(dump)], settings=target) == 1
        assert "is a dump of MLflow's tracking database" in capsys.readouterr().err
    assert users(pg, api_db) == ["ann"]


def test_the_password_stays_out_of_what_backup_and_restore_say(
    pg: Databases, api_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = pg.settings(
        api_db,
        api_db_host=pg.address.host,
        api_db_port=pg.address.port,
        api_db_user=pg.address.user,
        api_db_password="p@ss:w/rd",
        backup_dir=tmp_path,
    )
    assert main(["backup"], settings=settings) == 0
    assert main(["restore", "--yes"], settings=settings) == 0
    said = capsys.readouterr()
    assert "p@ss:w/rd" not in said.out + said.err


@pytest.fixture(scope="session")
def older_server() -> Databases:
    """PostgreSQL 15, as Debian 12 and many managed services run it; .ci/run installs it, so CI never skips this."""
    try:
        server = Databases(OLDER_SERVER_URL)
        server.query("postgres", "SELECT 1")
    except (OSError, SetupError) as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL 13-16 at {OLDER_SERVER_URL} ({exc}); set TEST_OLDER_DATABASE_URL to one")
    (version,) = server.query("postgres", "SELECT current_setting('server_version_num')::int / 10000")[0]
    assert version < 17, f"{OLDER_SERVER_URL} runs PostgreSQL {version}: point TEST_OLDER_DATABASE_URL at 13 to 16"
    return server


@pytest.fixture(params=["embedded PostgreSQL 18", "PostgreSQL 15"])
def server(request: pytest.FixtureRequest) -> Databases:
    name = "pg" if request.param.startswith("embedded") else "older_server"
    databases: Databases = request.getfixturevalue(name)
    return databases


@pytest.mark.slow
def test_backup_change_restore_round_trip_on_every_supported_server(
    server: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = server.create(server.new_name("round_trip"))
    try:
        settings = server.settings(db, backup_dir=tmp_path / "backups")
        assert main(["init"], settings=settings) == 0
        server.add_user(db, "ann")
        server.query(db, "CREATE TABLE analytics_notes (note text)")
        server.query(db, "INSERT INTO analytics_notes VALUES ('before')")
        assert main(["backup"], settings=settings) == 0
        (taken,) = archives(settings.backup_dir)
        listed = subprocess.run(
            [pg_tool("pg_restore"), "--list", str(settings.backup_dir / taken)], capture_output=True
        )
        assert b"analytics_notes" not in listed.stdout  # not the API's: not in its backup

        server.add_user(db, "bob")
        server.query(db, "UPDATE analytics_notes SET note = 'after'")
        assert main(["downgrade"], settings=settings) == 0
        assert main(["restore", "--yes", taken], settings=settings) == 0, capsys.readouterr().err
        assert (version(server, db), users(server, db)) == ([HEAD], ["ann"])
        assert server.query(db, "SELECT note FROM analytics_notes")[0][0] == "after"  # left as it was
        server.add_user(db, "cy")  # the ids' sequence came back with the table
        assert [row[0] for row in server.query(db, "SELECT id FROM users ORDER BY id")] == [1, 2]
    finally:
        server.drop(db)


def test_the_restore_script_drops_only_the_sets_the_server_refuses_or_that_lift_our_time_outs() -> None:
    script = [
        b"SET statement_timeout = 0;\n",
        b"SET lock_timeout = 0;\n",
        b"SET transaction_timeout = 0;\n",
        b"SET client_encoding = 'UTF8';\n",
        b"COPY public.users (id, full_name) FROM stdin;\n",
        b"1\tSET transaction_timeout = 0;\n",
        b"\\.\n",
        b"SET search_path = public;\n",
    ]
    on_15 = {"statement_timeout", "lock_timeout", "client_encoding", "search_path"}
    assert list(fit_for_server(script, on_15)) == [script[3], *script[4:]]


def test_restore_refuses_an_archive_that_holds_tables_not_the_apis(
    pg: Databases, settings: Settings, api_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.query(api_db, "CREATE TABLE analytics_notes (note text)")
    whole = whole_database_dump(settings, settings.backup_dir)
    pg.query(api_db, "INSERT INTO analytics_notes VALUES ('after the dump')")
    assert main(["restore", "--yes", str(whole)], settings=settings) == 1
    assert "holds tables that are not the API's (analytics_notes): restoring it would replace them too" in (
        capsys.readouterr().err
    )
    assert pg.query(api_db, "SELECT note FROM analytics_notes")[0][0] == "after the dump"


def test_backup_of_a_database_without_the_apis_tables_says_so(
    pg: Databases, empty_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup"], settings=pg.settings(empty_db, backup_dir=tmp_path)) == 1
    assert "has none of the API's tables yet: nothing to back up (`just migrate` creates them)" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []
