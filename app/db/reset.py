"""`just reset`: drop the API's own tables, version table and checksum table, and nothing else."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import SQLModel

from app.db.checksums import CHECKSUM_TABLE
from app.db.guard import VERSION_TABLE, check_database_is_ours
from app.db.migrations import take_migration_lock
from app.db.provision import quote_ident
from app.db.timeouts import set_migration_timeouts, timeouts_explained
from app.errors import SetupError
from app.settings import Settings

DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"

_EXISTING = sa.text(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ANY(:n)"
)


def drop_api_tables(connection: sa.Connection, known_revisions: Collection[str], settings: Settings) -> list[str]:
    """Drop the tables the models define plus the version and checksum tables; return those that existed."""
    take_migration_lock(connection)
    # As a migration does: behind a long transaction on users, give up rather than queue every request behind us.
    set_migration_timeouts(connection, settings)
    with timeouts_explained(settings, "reset"):
        check_database_is_ours(connection, known_revisions)
        ours = [*(table.name for table in reversed(SQLModel.metadata.sorted_tables)), VERSION_TABLE, CHECKSUM_TABLE]
        existing = set(connection.execute(_EXISTING, {"n": ours}).scalars())
        for name in (name for name in ours if name in existing):
            # One table a statement: a time-out then names the table it waited for (dropping user_roles locks users).
            connection.execute(sa.text(f"LOCK TABLE {quote_ident(name)} IN ACCESS EXCLUSIVE MODE"))
        _drop(connection)
    return sorted(existing)


def _drop(connection: sa.Connection) -> None:
    try:
        # No CASCADE: a foreign table that references ours makes the reset fail rather than lose its constraint.
        SQLModel.metadata.drop_all(connection, checkfirst=True)
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != DEPENDENT_OBJECTS_STILL_EXIST:
            raise
        detail = getattr(getattr(exc.orig, "__cause__", None), "detail", None) or "another table refers to them"
        raise SetupError(f"reset stopped and dropped nothing: {detail.rstrip('.')}. Drop that reference first") from exc
    connection.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}, {CHECKSUM_TABLE}"))
