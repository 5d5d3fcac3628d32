"""INVALID indexes on the API's tables: what a concurrent build leaves when it stops, found and rebuilt."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from app.db.migration_lock import autocommit
from app.db.models import API_TABLES
from app.db.provision import quote_ident
from app.db.timeouts import concurrent_timeout_statement, timeouts_explained
from app.settings import Settings

# `IF NOT EXISTS` skips an invalid index for ever, and queries never use it: it has to be rebuilt, not re-created.
_INVALID = sa.text(
    "SELECT i.relname AS name, t.relname AS table_name FROM pg_index x "
    "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
    "WHERE NOT x.indisvalid AND t.relnamespace = current_schema()::regnamespace AND t.relname = ANY(:tables) "
    "ORDER BY i.relname"
)
# What a stopped `REINDEX CONCURRENTLY` leaves beside the index it was rebuilding: dropped, never rebuilt.
_REINDEX_LEFTOVER = ("_ccnew", "_ccold")


@dataclass(frozen=True)
class InvalidIndex:
    """An index a concurrent build (or rebuild) left unfinished."""

    name: str
    table: str

    @property
    def is_leftover(self) -> bool:
        return self.name.rstrip("0123456789").endswith(_REINDEX_LEFTOVER)

    @property
    def repair(self) -> str:
        how = "DROP INDEX CONCURRENTLY IF EXISTS" if self.is_leftover else "REINDEX INDEX CONCURRENTLY"
        return f"{how} {quote_ident(self.name)}"

    def __str__(self) -> str:
        return (
            f"index {self.name} on table {self.table} is INVALID: a concurrent build stopped before it finished, and "
            f"queries do not use it. `just migrate` rebuilds it ({self.repair})"
        )


def invalid_indexes(connection: sa.Connection) -> list[InvalidIndex]:
    """The INVALID indexes on the API's tables in the API's schema."""
    rows = connection.execute(_INVALID, {"tables": sorted(API_TABLES)})
    return [InvalidIndex(row.name, row.table_name) for row in rows]


def rebuild_invalid_indexes(connection: sa.Connection, settings: Settings) -> list[InvalidIndex]:
    """Rebuild every INVALID index on the API's tables; call it holding the migration lock, outside a transaction."""
    found = invalid_indexes(connection)
    connection.commit()
    if not found:
        return found
    log = logging.getLogger("alembic.runtime.migration")
    with autocommit(connection), timeouts_explained(settings):
        connection.execute(sa.text(concurrent_timeout_statement(settings, inside=True)))
        try:
            for index in found:
                log.info("Running %s: a concurrent build left it INVALID", index.repair)
                connection.execute(sa.text(index.repair))
        finally:
            connection.execute(sa.text(concurrent_timeout_statement(settings, inside=False)))
    return found
