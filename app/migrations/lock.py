"""One schema change at a time: a session-level advisory lock, and time-outs that hold across the run's commits."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

import sqlalchemy as sa

from app.db.engine import single_connection
from app.migrations.timeouts import reset_timeouts, set_timeouts
from app.settings import Settings

T = TypeVar("T")

# Serialises migrations, resets and restores on one database; any constant works, this one spells "bikerent".
MIGRATION_LOCK_KEY = 0x62696B6572656E74
_TRY_LOCK = sa.text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = sa.text("SELECT pg_advisory_unlock(:key)")
_FIRST_POLL, _LONGEST_POLL, _SAY_WAITING_AFTER = 0.05, 0.5, 1.0


def _wait_for_lock(connection: sa.Connection, what: str) -> None:
    # Polled, never waited for inside a statement: a waiting statement holds a snapshot, and a concurrent index build
    # in the run that holds the lock waits for every older snapshot, a deadlock PostgreSQL cannot see.
    started = time.monotonic()
    pause, said = _FIRST_POLL, False
    while True:
        got = connection.execute(_TRY_LOCK, {"key": MIGRATION_LOCK_KEY}).scalar_one()
        connection.commit()
        if got:
            return
        if not said and time.monotonic() - started > _SAY_WAITING_AFTER:
            print(f"The {what} waits for another migration, reset or restore of this database.", file=sys.stderr)
            said = True
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_POLL)


@contextmanager
def migration_session(connection: sa.Connection, settings: Settings, what: str = "migration") -> Iterator[None]:
    """Hold the migration lock and the time-outs on `connection` for the block, through every commit in it.

    The connection must be outside a transaction; it is again when the block ends, with its settings as before.
    """
    if connection.in_transaction():
        connection.commit()
    _wait_for_lock(connection, what)
    try:
        # After the lock: waiting for another migration is expected, and lock_timeout would cut that wait short.
        set_timeouts(connection, settings)
        connection.commit()
        yield
    finally:
        # A lost connection has lost its lock and settings with it: nothing left to undo, and the first error stands.
        with suppress(sa.exc.SQLAlchemyError):
            if connection.in_transaction():
                connection.rollback()
            reset_timeouts(connection)
            connection.execute(_UNLOCK, {"key": MIGRATION_LOCK_KEY})
            connection.commit()


@contextmanager
def autocommit(connection: sa.Connection) -> Iterator[sa.Connection]:
    """The connection outside any transaction, for statements PostgreSQL refuses inside one (… CONCURRENTLY)."""
    if connection.in_transaction():
        connection.commit()
    level = connection.get_isolation_level()
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield connection
    finally:
        if connection.in_transaction():
            connection.commit()
        connection.execution_options(isolation_level=level)


@contextmanager
def afterwards(undo: Callable[[], object]) -> Iterator[None]:
    """Run `undo` after the block; when the block failed, a failure of `undo` does not hide the block's error."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            undo()
        raise
    undo()


async def run_locked(settings: Settings, what: str, body: Callable[[sa.Connection], T]) -> T:
    """Run `body` on a connection of its own that holds the migration lock and time-outs throughout.

    For a command that backs up and then changes the schema: nothing else changes it in between. A migration run
    inside (`config.attributes["connection"]`) takes the same lock again on the same session, which it may.
    """

    def locked(connection: sa.Connection) -> T:
        with migration_session(connection, settings, what):
            return body(connection)

    async with single_connection(settings) as connection:
        return await connection.run_sync(locked)
