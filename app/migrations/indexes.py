"""INVALID indexes on the API's tables: what a concurrent build leaves when it stops, found and rebuilt."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sqlalchemy as sa

from app.db.catalog import quote_ident
from app.db.models import API_TABLES
from app.db.pg_errors import driver_error, sqlstate
from app.errors import SetupError
from app.migrations.lock import afterwards, autocommit
from app.migrations.timeouts import TIMEOUT_SQLSTATES, concurrent_timeout_statement, timeouts_explained
from app.settings import Settings

# `IF NOT EXISTS` skips an invalid index for ever, and queries never use it: it has to be rebuilt, not re-created.
_INVALID = sa.text(
    "SELECT i.relname AS name, t.relname AS table_name FROM pg_index x "
    "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
    "JOIN pg_namespace n ON n.oid = t.relnamespace "
    "WHERE NOT x.indisvalid AND n.nspname = current_schema() AND t.relname = ANY(:tables) "
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


def rebuild_invalid_indexes(connection: sa.Connection, settings: Settings, found: list[InvalidIndex]) -> None:
    """Rebuild the INVALID indexes `found`; call it holding the migration lock, outside a transaction."""
    log = logging.getLogger("alembic.runtime.migration")
    leave = sa.text(concurrent_timeout_statement(settings, inside=False))
    with (
        autocommit(connection),
        timeouts_explained(settings, "rebuild"),
        afterwards(lambda: connection.execute(leave)),
    ):
        connection.execute(sa.text(concurrent_timeout_statement(settings, inside=True)))
        for index in found:
            log.info("Running %s: a concurrent build left it INVALID", index.repair)
            try:
                connection.execute(sa.text(index.repair))
            except sa.exc.DBAPIError as exc:
                if sqlstate(exc) in TIMEOUT_SQLSTATES:
                    raise
                said = str(driver_error(exc) or exc.orig).strip()
                raise SetupError(
                    f"could not rebuild INVALID index {index.name} on table {index.table}: {said}. Fix what it says "
                    f"(duplicate rows, for a unique index) and run `just migrate` again, or drop the index: "
                    f"DROP INDEX CONCURRENTLY {quote_ident(index.name)}"
                ) from exc
