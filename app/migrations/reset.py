"""`just reset`: drop the API's own tables, version table and checksum table, and nothing else."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import SQLModel

from app.db.catalog import existing_tables, quote_ident
from app.db.pg_errors import driver_error, sqlstate
from app.errors import SetupError
from app.migrations.checksums import CHECKSUM_TABLE
from app.migrations.guard import check_database_is_ours
from app.migrations.lock import migration_session
from app.migrations.revisions import VERSION_TABLE
from app.migrations.timeouts import timeouts_explained
from app.settings import Settings

DEPENDENT_OBJECTS_STILL_EXIST = "2BP01"


def api_owned_tables() -> list[str]:
    """The API's tables, dependents first, then Alembic's version table and the checksum table."""
    return [*(table.name for table in reversed(SQLModel.metadata.sorted_tables)), VERSION_TABLE, CHECKSUM_TABLE]


def drop_api_tables(connection: sa.Connection, known_revisions: Collection[str], settings: Settings) -> list[str]:
    """Drop the tables the models define plus the version and checksum tables; return those that existed."""
    # As a migration does: behind a long transaction on users, give up rather than queue every request behind us.
    with migration_session(connection, settings, "reset"), connection.begin(), timeouts_explained(settings, "reset"):
        check_database_is_ours(connection, known_revisions, settings.api_db_schema)
        ours = api_owned_tables()
        existing = set(existing_tables(connection, ours))
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
        if sqlstate(exc) != DEPENDENT_OBJECTS_STILL_EXIST:
            raise
        detail = getattr(driver_error(exc), "detail", None) or "another table refers to them"
        raise SetupError(f"reset stopped and dropped nothing: {detail.rstrip('.')}. Drop that reference first") from exc
    connection.execute(sa.text(f"DROP TABLE IF EXISTS {VERSION_TABLE}, {CHECKSUM_TABLE}"))
