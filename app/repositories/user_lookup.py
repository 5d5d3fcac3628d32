"""The read every authenticated request makes: the active user behind a token, while its login session lasts."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import bindparam, exists, func, make_url
from sqlmodel import col, select

from app.db.models import DBLoginSession, DBUser
from app.repositories.users import ROLE_NAMES, UserRecord, user_record

# The token's session is live: one primary-key probe inside the user's read, not a second round trip.
_LIVE_SESSION = exists().where(
    col(DBLoginSession.id) == bindparam("session_id", type_=sa.Uuid()),
    col(DBLoginSession.user_id) == col(DBUser.id),
    col(DBLoginSession.expires_at) > func.now(),
)
# What the hot path reads, and no more (no password hash): the columns of a UserRecord.
_ACTIVE_BY_ID = (
    select(DBUser.id, DBUser.username, DBUser.email, DBUser.full_name)
    .add_columns(col(DBUser.is_active), col(DBUser.created_at), col(DBUser.email_verified_at), ROLE_NAMES)
    .where(col(DBUser.id) == bindparam("user_id"), col(DBUser.is_active), _LIVE_SESSION)
)


class ActiveUserLookup:
    """The read every authenticated request makes: the active user behind a token, with its current roles, as long
    as the token's session has not ended.

    The SQLModel statement is compiled once per process and run on a small asyncpg pool of its own, outside a
    transaction: one prepared statement and one round trip, with no BEGIN/COMMIT, no ORM and no SQLAlchemy pool
    bookkeeping on the path every authenticated request takes.
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float, schema: str | None = None) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        # Requests take their turn at the pool first come, first served: asyncpg's own queue lets a newcomer take a
        # connection just released from under a request woken to take it, which then goes to the back of the queue
        # (under a flood, a tail of several times the median wait).
        self._turns = asyncio.Semaphore(pool.get_max_size())
        # The statement names API_DB_SCHEMA itself: through PgBouncer the connection has no search_path of ours.
        in_schema: dict[str, Any] = {"schema_translate_map": {None: schema}, "render_schema_translate": True}
        compiled = _ACTIVE_BY_ID.compile(
            dialect=make_url("postgresql+asyncpg://").get_dialect()(), **(in_schema if schema else {})
        )
        if list(compiled.positiontup or ()) != ["user_id", "session_id"]:
            raise RuntimeError(f"expected the parameters user_id and session_id, not {compiled.positiontup}")
        self._sql = str(compiled)

    async def __call__(self, user_id: int, session_id: uuid.UUID) -> UserRecord | None:
        if self._turns.locked():
            # A flood waits at most the pool time-out, then fails like the engine's pool does (TimeoutError: 503).
            async with asyncio.timeout(self.acquire_timeout):
                await self._turns.acquire()
        else:
            await self._turns.acquire()  # at once: no timer on the path of a request that need not wait
        try:
            # No time-out on the acquire (asyncpg would run it as a task of its own): a turn means a free connection.
            # The release keeps one: a connection that cannot be given back in time is closed instead.
            connection = await self.pool.acquire()
            try:
                row = await connection.fetchrow(self._sql, user_id, session_id)
            finally:
                await self.pool.release(connection, timeout=self.acquire_timeout)
        finally:
            self._turns.release()
        return user_record(_Columns(row), row["roles"]) if row is not None else None


class _Columns:
    """An asyncpg Record read by attribute, as `_record` reads a model."""

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return self._record[name]
