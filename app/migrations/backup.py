"""pg_dump archives of the API database: `just backup`, and the one migrate, downgrade, reset and restore take first."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import SQLModel

from app.db.catalog import current_schema, existing_tables, quote_ident
from app.db.pg_tools import first_error, pg_env, pg_tool
from app.errors import SetupError
from app.migrations.guard import check_database_is_ours
from app.migrations.reset import api_owned_tables
from app.migrations.revisions import database_revisions
from app.migrations.timeouts import timeouts_explained
from app.settings import Settings

SUFFIX = ".dump"
_NAME = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}\.\d{3}Z)-(?P<revision>[\w+]+)\.dump$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


class BackupError(SetupError):
    """A dump or a restore failed, or the archive is not one of the API database's."""


@dataclass(frozen=True)
class Backup:
    """An archive in the backup folder, as its name describes it."""

    path: Path
    taken_at: datetime
    revision: str


def _file_part(database: str) -> str:
    return re.sub(r"[^\w.-]", "_", database)


def list_backups(settings: Settings) -> list[Backup]:
    """The API database's archives in the backup folder, oldest first."""
    found = []
    for path in settings.backup_dir.glob(f"*{SUFFIX}"):
        match = _NAME.match(path.name)
        if match and match["db"] == _file_part(settings.api_db_name):
            taken_at = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
            found.append(Backup(path, taken_at, match["revision"]))
    return sorted(found, key=lambda backup: backup.taken_at)


def prune_backups(settings: Settings, *, spare: Path | None = None) -> list[Path]:
    """Delete all but the newest `backup_keep` archives of the API database (never `spare`); return them."""
    old = [b.path for b in list_backups(settings)[: -settings.backup_keep] if b.path != spare]
    for path in old:
        path.unlink(missing_ok=True)
    return old


@dataclass(frozen=True)
class ApiState:
    """What a backup needs to know of the API database before it dumps it."""

    revisions: frozenset[str]
    has_tables: bool
    holds_rows: bool
    schema: str


def take_backup(settings: Settings, state: ApiState) -> Path:
    """Dump the API's own tables (custom format) into the backup folder, named by database, UTC time and revision.

    Only the API's: whatever else the database holds (MLflow in another schema, a table of someone else's) is neither
    in the archive nor touched when it is restored.
    """
    try:
        settings.backup_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot keep backups in {settings.backup_dir}: {exc.strerror}; set BACKUP_DIR") from exc
    stamp = datetime.now(UTC).strftime(_STAMP)[:-4] + "Z"  # to the millisecond
    revision = "+".join(sorted(state.revisions)) or "base"
    path = settings.backup_dir / f"{_file_part(settings.api_db_name)}-{stamp}-{revision}{SUFFIX}"
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # never listed, never restored
    command = [pg_tool("pg_dump"), "--no-password", "--format=custom", f"--file={partial}"]
    # Owned sequences (the ids') come with their tables.
    command += [f"--table={quote_ident(state.schema)}.{quote_ident(name)}" for name in api_owned_tables()]
    if settings.migration_lock_timeout:
        # A table locked by a long transaction fails the dump instead of hanging it.
        command.append(f"--lock-wait-timeout={round(settings.migration_lock_timeout * 1000)}")
    result = subprocess.run(command, env=pg_env(settings), capture_output=True, check=False)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(
            f"pg_dump of database '{settings.api_db_name}' failed: {first_error(result.stderr, result.returncode)}"
        )
    partial.rename(path)
    return path


def api_tables_hold_rows(connection: sa.Connection) -> bool:
    """True when one of the API's tables has a row: one probe per table, however big it is."""
    existing = existing_tables(connection, SQLModel.metadata.tables)
    if not existing:
        return False
    probes = " UNION ALL ".join(f"(SELECT 1 FROM {quote_ident(name)} LIMIT 1)" for name in existing)
    return bool(connection.execute(sa.text(f"SELECT EXISTS ({probes})")).scalar_one())


def _api_state(connection: sa.Connection, settings: Settings, known_revisions: Collection[str]) -> ApiState:
    with timeouts_explained(settings):
        check_database_is_ours(connection, known_revisions, settings.api_db_schema)
        state = ApiState(
            database_revisions(connection),
            bool(existing_tables(connection, SQLModel.metadata.tables)),
            api_tables_hold_rows(connection),
            settings.api_db_schema or current_schema(connection),
        )
    connection.commit()
    return state


def backup_now(connection: sa.Connection, settings: Settings, known_revisions: Collection[str]) -> Path:
    """`just backup`: dump the API's tables (refusing MLflow's database), then keep only the newest archives.

    Call it holding the migration lock, so that no migration is halfway through what it dumps.
    """
    state = _api_state(connection, settings, known_revisions)
    if not state.has_tables:
        raise BackupError(
            f"database '{settings.api_db_name}' has none of the API's tables yet: nothing to back up "
            "(`just migrate` creates them)"
        )
    path = take_backup(settings, state)
    prune_backups(settings)
    return path


def backup_before_change(
    connection: sa.Connection,
    settings: Settings,
    known_revisions: Collection[str],
    action: str,
    *,
    unless_at: Collection[str] | None = None,
    spare: Path | None = None,
) -> Path | None:
    """Dump the API's tables before `action` changes them, when they hold rows and backups are on.

    Call it holding the migration lock. Nothing is dumped when the database is already at `unless_at` (nothing to
    migrate). A failed dump stops the action before it touches anything. `spare` is an archive the pruning must keep
    (the one being restored).
    """
    if not settings.auto_backup:
        return None
    state = _api_state(connection, settings, known_revisions)
    if not state.holds_rows or (unless_at is not None and state.revisions == set(unless_at)):
        return None
    try:
        path = take_backup(settings, state)
    except BackupError as exc:
        raise BackupError(
            f"{exc}; {action} stopped before changing anything. Fix that, or set AUTO_BACKUP=false to go on "
            "without a backup"
        ) from exc
    prune_backups(settings, spare=spare)
    return path
