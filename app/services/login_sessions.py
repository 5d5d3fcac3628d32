"""Login sessions: a login starts one, a refresh rotates its refresh token, a reused refresh token ends it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.tokens import new_token, token_digest
from app.repositories.login_sessions import LoginSessionRepository

logger = logging.getLogger("app.sessions")
# What is kept of a client's User-Agent header: enough to tell devices apart.
USER_AGENT_LENGTH = 255


@dataclass(frozen=True)
class SessionGrant:
    """A session's new refresh token (shown once, stored only as a digest) and whom it belongs to."""

    user_id: int
    session_id: uuid.UUID
    refresh_token: str


async def start_session(
    session_maker: async_sessionmaker[AsyncSession],
    user_id: int,
    user_agent: str | None,
    lifetime: timedelta,
    *,
    password_hash: str,
) -> SessionGrant | None:
    """A new session for the user, with its first refresh token; None when the password verified against
    `password_hash` was changed or reset while it was being checked (that change ended every session)."""
    token, digest = new_token()
    agent = user_agent.replace("\x00", "")[:USER_AGENT_LENGTH] if user_agent else None
    async with session_maker.begin() as session:
        session_id = await LoginSessionRepository(session).create(
            user_id, agent, digest, lifetime, password_hash=password_hash
        )
    return SessionGrant(user_id, session_id, token) if session_id is not None else None


async def refresh_session(
    session_maker: async_sessionmaker[AsyncSession], refresh_token: str, lifetime: timedelta
) -> SessionGrant | None:
    """Swap the session's newest refresh token for a new one; None when the token cannot refresh.

    A token a refresh replaced already was copied: its whole session ends (refresh and access tokens alike).
    """
    token, digest = new_token()
    presented = token_digest(refresh_token)
    async with session_maker.begin() as session:
        repository = LoginSessionRepository(session)
        found = await repository.find_token(presented)
        if found is None or not (found.usable or found.rotated):
            return None
        if found.rotated:
            await repository.end(found.session_id)  # committed: the refusal below must not undo it
        else:
            await repository.rotate(found.session_id, presented, digest, lifetime)
    if found.rotated:
        logger.warning("a used refresh token came back: ended session %s of user %s", found.session_id, found.user_id)
        return None
    return SessionGrant(found.user_id, found.session_id, token)
