"""Applied revisions can't change unnoticed: a checksum of each applied revision's file, kept in the database.

Beside each checksum, the revision's parents and phase: its lineage, which lets an older release recognise this
project's newer revisions (see `lineage.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from alembic import util
from alembic.script import Script, ScriptDirectory

from app.db.catalog import current_database, table_exists
from app.errors import SetupError
from app.migrations.phases import phase_of
from app.migrations.revisions import database_revisions
from app.settings import PROJECT_ROOT

CHECKSUM_TABLE = "alembic_checksums"

# `parents`: the revision's parents, space-separated ('' for the first); `phase`: expand or contract. Both nullable:
# tables made before they existed get them added, and filled the next time a migration command runs.
_CREATE = sa.text(
    f"CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE} ("
    "revision varchar(32) PRIMARY KEY, sha256 char(64) NOT NULL, file_name text NOT NULL, "
    "recorded_at timestamptz NOT NULL DEFAULT now(), parents text, phase text)"
)
_LINEAGE_COLUMNS = sa.text(
    f"ALTER TABLE {CHECKSUM_TABLE} ADD COLUMN IF NOT EXISTS parents text, ADD COLUMN IF NOT EXISTS phase text"
)
_HAS_LINEAGE = sa.text(
    "SELECT count(*) = 2 FROM information_schema.columns WHERE table_schema = current_schema() "
    f"AND table_name = '{CHECKSUM_TABLE}' AND column_name IN ('parents', 'phase')"
)
_INSERT = sa.text(
    f"INSERT INTO {CHECKSUM_TABLE} (revision, sha256, file_name, parents, phase) "
    "VALUES (:revision, :sha256, :file_name, :parents, :phase)"
)
_SET_LINEAGE = sa.text(f"UPDATE {CHECKSUM_TABLE} SET parents = :parents, phase = :phase WHERE revision = :revision")
_DELETE = sa.text(f"DELETE FROM {CHECKSUM_TABLE} WHERE revision = ANY(:revisions)")


class RevisionChangedError(SetupError):
    """A revision file differs from the one that was applied to the database."""


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a revision file, blind to line endings (a Windows checkout is not an edit)."""
    return hashlib.sha256(Path(path).read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def _shown(path: str | Path) -> str:
    return str(Path(path).relative_to(PROJECT_ROOT)) if Path(path).is_relative_to(PROJECT_ROOT) else str(path)


def _applied_scripts(script: ScriptDirectory, heads: Iterable[str]) -> dict[str, Script]:
    """Every revision the database has applied: its heads and all their ancestors."""
    upper = tuple(heads)
    if not upper:
        return {}
    return {rev.revision: rev for rev in script.iterate_revisions(upper, "base")}


def _recorded(connection: sa.Connection) -> dict[str, str] | None:
    if not table_exists(connection, CHECKSUM_TABLE):
        return None
    rows = connection.execute(sa.text(f"SELECT revision, sha256 FROM {CHECKSUM_TABLE}"))
    return {row.revision: row.sha256 for row in rows}


def has_lineage(connection: sa.Connection) -> bool:
    """True when the checksum table exists and has its lineage columns."""
    return table_exists(connection, CHECKSUM_TABLE) and bool(connection.execute(_HAS_LINEAGE).scalar_one())


def verify_checksums(connection: sa.Connection, script: ScriptDirectory, applied_heads: Iterable[str]) -> None:
    """Raise RevisionChangedError naming every applied revision whose file changed since it was applied.

    `applied_heads`: the newest applied revisions this checkout has (a newer release's files are not here to check).
    """
    recorded = _recorded(connection) or {}
    applied = _applied_scripts(script, applied_heads)
    changed = [
        _shown(rev.path)
        for revision, rev in sorted(applied.items())
        if revision in recorded and recorded[revision] != file_checksum(rev.path)
    ]
    if not changed:
        return
    database = current_database(connection)
    files = " ".join(changed)
    raise RevisionChangedError(
        f"{', '.join(changed)} changed after {'it was' if len(changed) == 1 else 'they were'} applied to database "
        f"'{database}'; nothing was changed. An applied revision must not change: put it back (git checkout -- "
        f'{files}) and create a new revision instead (just revision "..."). One nobody else has applied can be '
        "edited after putting it back and rolling it back (just downgrade)"
    )


def record_checksums(connection: sa.Connection, script: ScriptDirectory) -> None:
    """Make the checksum table match the applied revisions: add the new ones, forget the rolled-back ones.

    Runs in the migration's transaction, so a checksum is recorded exactly when its revision is applied. Revisions
    applied before this table existed are recorded as they are now, the first time a migration command runs.
    """
    applied = _applied_scripts(script, database_revisions(connection))
    recorded = _recorded(connection)
    if recorded is None:
        if not applied:
            return
        connection.execute(_CREATE)
        recorded = {}
    elif not has_lineage(connection):
        connection.execute(_LINEAGE_COLUMNS)
    gone = sorted(set(recorded) - set(applied))
    if gone:
        connection.execute(_DELETE, {"revisions": gone})
    without_lineage = set(
        connection.execute(sa.text(f"SELECT revision FROM {CHECKSUM_TABLE} WHERE phase IS NULL")).scalars()
    )
    for revision, rev in sorted(applied.items()):
        if revision not in recorded:
            connection.execute(
                _INSERT, {**_lineage(rev), "sha256": file_checksum(rev.path), "file_name": Path(rev.path).name}
            )
        elif revision in without_lineage:
            connection.execute(_SET_LINEAGE, _lineage(rev))


def _lineage(rev: Script) -> dict[str, str]:
    parents = " ".join(util.to_tuple(rev.down_revision, default=()))
    return {"revision": rev.revision, "parents": parents, "phase": phase_of(rev)}
