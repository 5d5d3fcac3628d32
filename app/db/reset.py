"""`just reset`: drop the API's own tables, version table and checksum table, and nothing else."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import SQLModel

from app.db.checksums import CHECKSUM_TABLE
from app.db.guard import VERSION_TABLE, check_database_is_ours
from app.db.migrations import take_migration_lock
from app.errors import SetupError

DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"

_EXISTING = sa.text(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ANY(:n)"
)


def drop_api_tables(connection: sa.Connection, known_revisions: Collection[str]) -> list[str]:
    """Drop the tables the models define plus the version and checksum tables; return those that existed."""
    take_migration_lock(connection)
    check_database_is_ours(connection, known_revisions)
    ours = [*SQLModel.metadata.tables, VERSION_TABLE, CHECKSUM_TABLE]
    existing = sorted(connection.execute(_EXISTING, {"n": ours}).scalars())
    try:
        # No CASCADE: a foreign table that references ours makes the reset fail rather than lose its constraint.
        SQLModel.metadata.drop_all(connection, checkfirst=True)
    except sa.exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != DEPENDENT_OBJECTS_STILL_EXIST:
            raise
        detail = getattr(getattr(exc.orig, "__cause__", None), "detail", None) or "another table refers to them"
        raise SetupError(f"reset stopped and dropped nothing: {detail.rstrip('.')}. Drop that reference first") from exc
    connection.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}, {CHECKSUM_TABLE}"))
    return existing
