"""Dependencies injected into handlers: one session and transaction per request, the password hashers."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncSession

from app.services.passwords import PasswordHashing


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """A session in a transaction, committed after the handler returns and rolled back if it raises.

    The pool connection is checked out on the first statement, not here.
    """
    async with state.sessionmaker() as session, session.begin():
        yield session


def provide_hashing(state: State) -> PasswordHashing:
    hashing: PasswordHashing = state.hashing
    return hashing
