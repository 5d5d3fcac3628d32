"""Lock and statement time-outs of schema changes, and what it means when one of them stops a migration."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from app.db.pg_errors import sqlstate
from app.errors import SetupError
from app.settings import Settings

LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
TIMEOUT_SQLSTATES = frozenset({LOCK_NOT_AVAILABLE, QUERY_CANCELED})

# The table a DDL or DML statement works on: enough to tell a person which lock the migration waited for.
_TABLE = re.compile(
    r"\b(?:ALTER\s+TABLE|DROP\s+TABLE|LOCK\s+TABLE|TRUNCATE|UPDATE|INTO|FROM|INDEX\s+.*?\bON)"
    r"\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>[\w.\"]+)",
    re.IGNORECASE | re.DOTALL,
)


_CONCURRENT = re.compile(r"\bCONCURRENTLY\b", re.IGNORECASE)


class MigrationTimeoutError(SetupError):
    """A migration waited too long for a lock, or a statement ran too long; its transaction was rolled back."""


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _ms(seconds: float) -> str:
    return f"'{round(seconds * 1000)}ms'"


def timeout_statements(settings: Settings) -> list[str]:
    """`SET` statements for a migration's session (from settings: numbers, never text to quote).

    Session-wide, not `SET LOCAL`: a revision's `autocommit_block()` commits, and the time-outs must outlive that.
    """
    return [lock_timeout_statement(settings), f"SET statement_timeout = {_ms(settings.migration_statement_timeout)}"]


def lock_timeout_statement(settings: Settings) -> str:
    return f"SET lock_timeout = {_ms(settings.migration_lock_timeout)}"


def concurrent_timeout_statement(settings: Settings, *, inside: bool) -> str:
    """The statement time-out on entering (`inside`) or leaving a revision's `autocommit_block()`."""
    seconds = settings.migration_concurrent_timeout if inside else settings.migration_statement_timeout
    return f"SET statement_timeout = {_ms(seconds)}"


def set_timeouts(connection: sa.Connection, settings: Settings) -> None:
    """Limit lock waits and statement times on this connection until `reset_timeouts`."""
    for statement in timeout_statements(settings):
        connection.execute(sa.text(statement))


def reset_timeouts(connection: sa.Connection) -> None:
    """Give the connection back its server's time-outs."""
    connection.execute(sa.text("RESET lock_timeout"))
    connection.execute(sa.text("RESET statement_timeout"))


@contextmanager
def timeouts_explained(
    settings: Settings, what: str = "migration", committed_midway: Callable[[], bool] = lambda: False
) -> Iterator[None]:
    """A lock or statement time-out of a `what` (migration, reset) as a message: what waited, on what, what to do.

    `committed_midway` tells whether the run committed part of its work already (an autocommit block did).
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        code = sqlstate(exc)
        statement = exc.statement or ""
        found = _TABLE.search(statement)
        table = f"table {found['table'].strip(chr(34))}" if found else "a table"
        concurrent = bool(_CONCURRENT.search(statement))
        # A concurrent build commits as it goes: a stopped one leaves an INVALID index behind, not nothing.
        if concurrent:
            outcome = "the index it was building is left INVALID, and the next `just migrate` rebuilds it"
        elif committed_midway():
            outcome = "what ran before its last autocommit block stays applied (`just current` shows the revision)"
        else:
            outcome = "nothing was changed"
        if code == LOCK_NOT_AVAILABLE:
            raise MigrationTimeoutError(
                f"the {what} waited more than {_seconds(settings.migration_lock_timeout)} for a lock on {table}, "
                f"which another transaction holds, and stopped; {outcome}. Run it again when that "
                "transaction has ended (pg_stat_activity shows it), or raise MIGRATION_LOCK_TIMEOUT"
            ) from exc
        if code == QUERY_CANCELED and "statement timeout" in str(exc.orig):
            limit, setting = (
                (settings.migration_concurrent_timeout, "MIGRATION_CONCURRENT_TIMEOUT")
                if concurrent
                else (settings.migration_statement_timeout, "MIGRATION_STATEMENT_TIMEOUT")
            )
            raise MigrationTimeoutError(
                f"a {what} statement on {table} ran longer than {_seconds(limit)} and was cancelled; {outcome}. "
                f"Raise {setting} for this run, or split the change into smaller steps"
            ) from exc
        raise
