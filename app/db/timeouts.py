"""Lock and statement time-outs of schema changes, and what it means when one of them stops a migration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from app.errors import SetupError
from app.settings import Settings

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"

# The table a DDL or DML statement works on: enough to tell a person which lock the migration waited for.
_TABLE = re.compile(
    r"\b(?:ALTER\s+TABLE|DROP\s+TABLE|LOCK\s+TABLE|TRUNCATE|UPDATE|INTO|FROM|INDEX\s+.*?\bON)"
    r"\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>[\w.\"]+)",
    re.IGNORECASE | re.DOTALL,
)


class MigrationTimeoutError(SetupError):
    """A migration waited too long for a lock, or a statement ran too long; its transaction was rolled back."""


def _seconds(value: float) -> str:
    return f"{value:g} s"


def timeout_statements(settings: Settings) -> list[str]:
    """`SET LOCAL` statements for a migration's transaction (from settings: numbers, never text to quote)."""
    return [
        f"SET LOCAL lock_timeout = '{round(settings.migration_lock_timeout * 1000)}ms'",
        f"SET LOCAL statement_timeout = '{round(settings.migration_statement_timeout * 1000)}ms'",
    ]


def set_migration_timeouts(connection: sa.Connection, settings: Settings) -> None:
    """Limit lock waits and statement times until the transaction ends.

    Call it after taking the migration lock: waiting for another migration is expected, and lock_timeout would cut
    that wait short too.
    """
    for statement in timeout_statements(settings):
        connection.execute(sa.text(statement))


@contextmanager
def timeouts_explained(settings: Settings, what: str = "migration") -> Iterator[None]:
    """A lock or statement time-out of a `what` (migration, reset) as a message: what waited, on what, what to do."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        code = getattr(exc.orig, "sqlstate", None)
        found = _TABLE.search(exc.statement or "")
        table = f"table {found['table'].strip(chr(34))}" if found else "a table"
        if code == LOCK_NOT_AVAILABLE:
            raise MigrationTimeoutError(
                f"the {what} waited more than {_seconds(settings.migration_lock_timeout)} for a lock on {table}, "
                "which another transaction holds, and stopped; nothing was changed. Run it again when that "
                "transaction has ended (pg_stat_activity shows it), or raise MIGRATION_LOCK_TIMEOUT"
            ) from exc
        if code == QUERY_CANCELED and "statement timeout" in str(exc.orig):
            raise MigrationTimeoutError(
                f"a {what} statement on {table} ran longer than "
                f"{_seconds(settings.migration_statement_timeout)} and was cancelled; nothing was changed. "
                "Raise MIGRATION_STATEMENT_TIMEOUT for this run, or split the change into smaller steps"
            ) from exc
        raise
