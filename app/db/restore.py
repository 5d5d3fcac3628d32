"""`just restore`: put a pg_dump archive of the API database back, in one transaction, refusing anyone else's."""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import SQLModel

from app.db.backup import BackupError, first_error, list_backups, pg_env, pg_tool
from app.db.checksums import CHECKSUM_TABLE
from app.db.engine import api_connection
from app.db.guard import MLFLOW_SIGNATURE, VERSION_TABLE, check_database_is_ours
from app.db.migrations import MIGRATION_LOCK_KEY
from app.db.provision import quote_ident
from app.db.timeouts import timeout_statements
from app.settings import Settings

_DBNAME = re.compile(r"^;\s+dbname: (?P<name>.*)$", re.MULTILINE)
_CREATED = re.compile(r"^; Archive created at (?P<at>.*)$", re.MULTILINE)
_TABLE = re.compile(r"^\d+; \d+ \d+ TABLE \S+ (?P<name>\S+) ", re.MULTILINE)


@dataclass(frozen=True)
class Archive:
    """What `pg_restore --list` says about a dump."""

    path: Path
    database: str
    created: str
    tables: frozenset[str]


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
    archive = Archive(
        path, found["name"].strip(), created["at"].strip() if created else "?", frozenset(_TABLE.findall(toc))
    )
    if archive.database == settings.postgres_db or archive.tables >= MLFLOW_SIGNATURE:
        raise BackupError(
            f"{path} is a dump of MLflow's tracking database ('{archive.database}'), not of the API's; "
            "nothing was restored"
        )
    if archive.database != settings.api_db_name:
        raise BackupError(
            f"{path} is a dump of database '{archive.database}', not of the API database "
            f"'{settings.api_db_name}'; nothing was restored"
        )
    return archive


def _prologue(settings: Settings) -> str:
    # One transaction with the archive's own statements (psql --single-transaction): the API's tables go, the
    # archive's come back, or nothing changes. Tables a later migration added go too, so the database ends up
    # exactly at the archive's revision; tables that are not the API's are left alone unless the archive has them.
    ours = [*(table.name for table in reversed(SQLModel.metadata.sorted_tables)), VERSION_TABLE, CHECKSUM_TABLE]
    return "\n".join(
        [
            f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});",
            *(f"{statement};" for statement in timeout_statements(settings)),
            *(f"DROP TABLE IF EXISTS {quote_ident(name)};" for name in ours),
            "",
        ]
    )


def restore_archive(settings: Settings, archive: Archive, known_revisions: Collection[str]) -> None:
    """Replace the API's tables in the API database with the archive's, atomically."""

    async def guard() -> None:
        async with api_connection(settings) as connection:
            await connection.run_sync(check_database_is_ours, known_revisions)

    asyncio.run(guard())
    env = pg_env(settings)
    dump = [pg_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--file=-", str(archive.path)]
    psql = [pg_tool("psql"), "--no-password", "--no-psqlrc", "--quiet", "--single-transaction"]
    psql += ["--set=ON_ERROR_STOP=1", "--file=-"]
    with tempfile.TemporaryFile() as script:
        script.write(_prologue(settings).encode())
        script.flush()
        rendered = subprocess.run(dump, env=env, stdout=script, stderr=subprocess.PIPE, check=False)
        if rendered.returncode != 0:
            raise BackupError(f"pg_restore could not read {archive.path}: {first_error(rendered.stderr, 1)}")
        script.seek(0)
        result = subprocess.run(psql, env=env, stdin=script, capture_output=True, check=False)
    if result.returncode != 0:
        raise BackupError(
            f"restoring {archive.path} failed and changed nothing: {first_error(result.stderr, result.returncode)}"
        )
