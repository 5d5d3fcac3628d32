"""Fill a column of a big table in batches, from a revision, while the service keeps writing to it.

One UPDATE over a million rows holds their locks until it commits, and every write to them waits. In batches, each
its own short transaction, a writer waits for one batch at most, and a run that was stopped (a lock time-out, a
kill) goes on where it stopped: the next run starts at the first row still NULL.

In a revision:

    def upgrade() -> None:
        with op.get_context().autocommit_block():
            backfill("users", "nickname", "lower(username)")
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from alembic import op

from app.db.catalog import quote_ident

PROGRESS_EVERY_SECONDS = 2.0
_log = logging.getLogger("alembic.runtime.migration")  # its "Running ..." lines are the ones `just migrate` shows


def backfill(table: str, column: str, value: str, *, key: str = "id", batch_size: int = 5000) -> int:
    """Set `column` to the SQL expression `value` on every row where it is NULL, `batch_size` rows at a time in
    `key` order; how many rows it set. Call it inside `op.get_context().autocommit_block()`.

    Each batch is one statement, committed on its own, under the migration's lock time-out. Offline (`just sql`,
    the lint) it writes the statement of one batch.
    """
    t, c, k = quote_ident(table), quote_ident(column), quote_ident(key)
    # The batch's keys under a name of their own: `value` may name any of the table's columns, `id` included.
    batch = (
        f"WITH batch AS (SELECT {k} AS batch_key FROM {t} WHERE {k} > :after ORDER BY {k} LIMIT :size), "
        f"changed AS (UPDATE {t} SET {c} = {value} FROM batch WHERE {t}.{k} = batch.batch_key AND {t}.{c} IS NULL "
        "RETURNING 1) SELECT (SELECT max(batch_key) FROM batch), (SELECT count(*) FROM changed)"
    )
    if op.get_context().as_sql:
        shown = f"/* backfill {table}.{column}: this statement, batch after batch, each committed on its own */ "
        op.execute(sa.text(shown + batch).bindparams(after=0, size=batch_size))
        return 0
    bind = op.get_bind()
    start = bind.execute(sa.text(f"SELECT min({k}) FROM {t} WHERE {c} IS NULL")).scalar()
    if start is None:
        return 0
    left = bind.execute(sa.text(f"SELECT count(*) FROM {t} WHERE {c} IS NULL")).scalar_one()
    started = said = time.monotonic()
    done, after = 0, start - 1
    while True:
        last, changed = bind.execute(sa.text(batch), {"after": after, "size": batch_size}).one()
        if last is None:
            break
        done, after = done + changed, last
        if time.monotonic() - said >= PROGRESS_EVERY_SECONDS:
            said = time.monotonic()
            _progress(table, column, done, left, said - started)
    _progress(table, column, done, left, time.monotonic() - started)
    return int(done)


def _progress(table: str, column: str, done: int, left: int, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    _log.info(
        "Running backfill of %s.%s: %d of %d rows (%d%%), %.0f rows/s",
        table,
        column,
        done,
        left,
        100 * done // max(left, 1),
        rate,
    )
