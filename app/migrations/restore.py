"""`just restore`: put a pg_dump archive of the API database back, in one transaction, refusing anyone else's."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from app.db.catalog import current_schema, quote_ident
from app.db.pg_tools import first_error, pg_env, pg_tool
from app.migrations.backup import BackupError, list_backups
from app.migrations.guard import MLFLOW_SIGNATURE, check_database_is_ours
from app.migrations.lock import migration_session
from app.migrations.reset import api_owned_tables
from app.migrations.timeouts import lock_timeout_statement
from app.settings import Settings

_DBNAME = re.compile(r"^;\s+dbname: (?P<name>.*)$", re.MULTILINE)
_CREATED = re.compile(r"^; Archive created at (?P<at>.*)$", re.MULTILINE)
_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE (?!DATA )(?P<schema>\S+) (?P<name>\S+) ", re.MULTILINE)
_SET = re.compile(rb"^SET (?P<name>\w+) = ")
_OURS = frozenset({"lock_timeout", "statement_timeout"})


@dataclass(frozen=True)
class Archive:
    """What `pg_restore --list` says about a dump."""

    path: Path
    database: str
    created: str
    tables: frozenset[str]
    schemas: frozenset[str]


def choose_archive(settings: Settings, given: str | None) -> Path:
    """The archive named (a path, or a file name in the backup folder), or the newest of the API database."""
    if given:
        for path in (Path(given), settings.backup_dir / given):
            if path.is_file():
                return path
        raise BackupError(f"no archive at {given}; `ls {settings.backup_dir}` lists the backups")
    backups = list_backups(settings)
    if not backups:
        raise BackupError(
            f"no backup of database '{settings.api_db_name}' in {settings.backup_dir}; take one with `just backup`"
        )
    return backups[-1].path


def read_archive(path: Path, settings: Settings) -> Archive:
    """Read the archive's table of contents; refuse an archive of any database but the API's (MLflow's first)."""
    result = subprocess.run([pg_tool("pg_restore"), "--list", str(path)], capture_output=True, check=False)
    toc = result.stdout.decode(errors="replace")
    found = _DBNAME.search(toc)
    if result.returncode != 0 or not found:
        raise BackupError(f"{path} is not a pg_dump archive: {first_error(result.stderr, result.returncode)}")
    created = _CREATED.search(toc)
    tables = list(_TABLE.finditer(toc))
    archive = Archive(
        path,
        found["name"].strip(),
        created["at"].strip() if created else "?",
        frozenset(table["name"] for table in tables),
        frozenset(table["schema"] for table in tables),
    )
    mlflows_database = archive.database == settings.postgres_db and settings.api_db_name != settings.postgres_db
    if mlflows_database or archive.tables & MLFLOW_SIGNATURE:
        raise BackupError(
            f"{path} is a dump of MLflow's tracking database ('{archive.database}'), not of the API's; "
            "nothing was restored"
        )
    if archive.database != settings.api_db_name:
        raise BackupError(
            f"{path} is a dump of database '{archive.database}', not of the API database "
            f"'{settings.api_db_name}'; nothing was restored"
        )
    foreign = sorted(archive.tables - set(api_owned_tables()))
    if foreign:
        raise BackupError(
            f"{path} holds tables that are not the API's ({', '.join(foreign)}): restoring it would replace them "
            "too; nothing was restored. Restore the API's tables from a backup `just backup` took"
        )
    return archive


def _prologue(settings: Settings, schema: str) -> str:
    # One transaction with the archive's own statements (psql --single-transaction): the API's tables go, the
    # archive's come back, or nothing changes. Tables a later migration added go too, so the database ends up
    # exactly at the archive's revision; tables that are not the API's are in no archive and are left alone.
    # The lock time-out holds (a long transaction fails the restore rather than queue it); statements may take as
    # long as the data needs: the tables are being replaced, nobody can use them meanwhile anyway.
    return "\n".join(
        [
            f"{lock_timeout_statement(settings)};",
            "SET statement_timeout = 0;",
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)};",
            *(f"DROP TABLE IF EXISTS {quote_ident(schema)}.{quote_ident(name)};" for name in api_owned_tables()),
            "",
        ]
    )


def fit_for_server(script: Iterable[bytes], known_settings: Collection[str]) -> Iterator[bytes]:
    """The restore script without the `SET`s this server would refuse, nor those that would lift our time-outs.

    pg_restore 18 writes `SET transaction_timeout = 0;`, which servers before 17 reject; and its `SET lock_timeout
    = 0;` would let a restore queue behind a long transaction for ever. COPY data passes through untouched.
    """
    in_copy = False
    for line in script:
        if in_copy:
            in_copy = line.rstrip(b"\r\n") != b"\\."
        elif line.startswith(b"COPY "):
            in_copy = True
        elif (found := _SET.match(line)) and (
            found["name"].decode() not in known_settings or found["name"].decode() in _OURS
        ):
            continue
        yield line


def known_settings(connection: sa.Connection) -> frozenset[str]:
    """The settings this server knows (a restore script's `SET`s of others would fail)."""
    return frozenset(connection.execute(sa.text("SELECT name FROM pg_settings")).scalars())


def restore_archive(
    connection: sa.Connection, settings: Settings, archive: Archive, known_revisions: Collection[str]
) -> None:
    """Replace the API's tables in the API database with the archive's, atomically."""
    # The session lock is held on `connection` while psql restores on one of its own: no migration runs meanwhile.
    with migration_session(connection, settings, "restore"):
        check_database_is_ours(connection, known_revisions, settings.api_db_schema)
        schema = settings.api_db_schema or current_schema(connection)
        known = known_settings(connection)
        connection.commit()
        if archive.schemas - {schema}:
            raise BackupError(
                f"{archive.path} holds the API's tables of schema {', '.join(sorted(archive.schemas))}, not of "
                f"'{schema}'; nothing was restored. Set API_DB_SCHEMA to the schema it was taken from"
            )
        _replay(settings, archive, schema, known)


def _replay(settings: Settings, archive: Archive, schema: str, known: frozenset[str]) -> None:
    env = pg_env(settings)
    dump = [pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--file=-", str(archive.path)]
    psql = [pg_tool("psql"), "--no-password", "--no-psqlrc", "--quiet", "--single-transaction"]
    psql += ["--set=ON_ERROR_STOP=1", "--file=-"]
    with tempfile.TemporaryFile() as script, tempfile.TemporaryFile() as errors:
        script.write(_prologue(settings, schema).encode())
        with subprocess.Popen(dump, env=env, stdout=subprocess.PIPE, stderr=errors) as rendering:
            script.writelines(fit_for_server(rendering.stdout or [], known))
        if rendering.returncode != 0:
            errors.seek(0)
            raise BackupError(f"pg_restore could not read {archive.path}: {first_error(errors.read(), 1)}")
        script.seek(0)
        result = subprocess.run(psql, env=env, stdin=script, capture_output=True, check=False)
    if result.returncode != 0:
        raise BackupError(
            f"restoring {archive.path} failed and changed nothing: {first_error(result.stderr, result.returncode)}"
        )
