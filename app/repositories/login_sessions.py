"""Queries on `user_sessions` and `refresh_tokens`: logins, their refresh tokens, and their end."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert
from sqlmodel import col, delete, select, update

from app.db.models import DBLoginSession, DBRefreshToken, DBUser
from app.repositories.base import Repository

_NOW = func.now()


@dataclass(frozen=True)
class LoginSessionRecord:
    """A login as its user sees it; never its refresh token."""

    id: uuid.UUID
    user_agent: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class PresentedToken:
    """What a presented refresh token turned out to be."""

    session_id: uuid.UUID
    user_id: int
    # Replaced by a refresh already: presenting it again means someone else holds a copy.
    rotated: bool
    # Unexpired, in an unexpired session of an active user.
    usable: bool


class LoginSessionRepository(Repository):
    """Login sessions and their refresh tokens."""

    async def create(
        self, user_id: int, user_agent: str | None, token_hash: str, lifetime: timedelta, *, password_hash: str
    ) -> uuid.UUID | None:
        """A new session with its first refresh token; its id. None when the user's password is no longer
        `password_hash` (changed or reset since it was verified) or the user was deactivated meanwhile."""
        # Shared lock: a reset or change still in flight commits first, and this login then finds the new hash.
        still = select(DBUser.id).where(
            col(DBUser.id) == user_id, col(DBUser.hashed_password) == password_hash, col(DBUser.is_active)
        )
        if (await self.session.exec(still.with_for_update(read=True))).one_or_none() is None:
            return None
        session_id = uuid.uuid4()
        # Expiry from the database's clock, as every check of it is: instances' clocks never enter into it.
        values = {"id": session_id, "user_id": user_id, "user_agent": user_agent, "expires_at": _NOW + lifetime}
        await self.session.exec(insert(DBLoginSession).values(values))
        await self._add_token(session_id, token_hash, lifetime)
        return session_id

    async def find_token(self, token_hash: str) -> PresentedToken | None:
        """The refresh token with this digest, locked until the transaction ends, or None."""
        # The session first, then its token: the order a session's deletion takes them in (its row, then the tokens
        # by cascade). The other order deadlocks a refresh against a logout, and the logout would lose.
        owner = select(DBRefreshToken.session_id).where(col(DBRefreshToken.token_hash) == token_hash)
        locked = select(DBLoginSession.id).where(col(DBLoginSession.id).in_(owner.scalar_subquery())).with_for_update()
        await self.session.exec(locked)
        usable = (
            (col(DBRefreshToken.expires_at) > _NOW) & (col(DBLoginSession.expires_at) > _NOW) & col(DBUser.is_active)
        )
        statement = (
            select(DBRefreshToken.session_id, DBLoginSession.user_id, DBRefreshToken.rotated_at, usable)
            .join(DBLoginSession, col(DBLoginSession.id) == col(DBRefreshToken.session_id))
            .join(DBUser, col(DBUser.id) == col(DBLoginSession.user_id))
            .where(col(DBRefreshToken.token_hash) == token_hash)
            # Two refreshes with one token take turns: the second sees the first's rotation, and counts as reuse.
            .with_for_update(of=DBRefreshToken)
        )
        row = (await self.session.exec(statement)).one_or_none()
        if row is None:
            return None
        session_id, user_id, rotated_at, is_usable = row
        return PresentedToken(session_id, user_id, rotated=rotated_at is not None, usable=bool(is_usable))

    async def rotate(self, session_id: uuid.UUID, old_hash: str, new_hash: str, lifetime: timedelta) -> None:
        """Mark `old_hash` rotated, add `new_hash` as the session's newest token, and extend the session."""
        rotated = update(DBRefreshToken).where(col(DBRefreshToken.token_hash) == old_hash).values(rotated_at=_NOW)
        await self.session.exec(rotated)
        await self._add_token(session_id, new_hash, lifetime)
        extended = update(DBLoginSession).where(col(DBLoginSession.id) == session_id)
        await self.session.exec(extended.values(last_used_at=_NOW, expires_at=_NOW + lifetime))

    async def end(self, session_id: uuid.UUID, *, user_id: int | None = None) -> bool:
        """Delete the session (of `user_id`, when given) and its refresh tokens; whether it existed."""
        statement = delete(DBLoginSession).where(col(DBLoginSession.id) == session_id)
        if user_id is not None:
            statement = statement.where(col(DBLoginSession.user_id) == user_id)
        result = await self.session.exec(statement)
        return bool(result.rowcount)

    async def end_all(self, user_id: int, *, keeping: uuid.UUID | None = None) -> int:
        """Delete every session of the user (but `keeping`); how many there were."""
        statement = delete(DBLoginSession).where(col(DBLoginSession.user_id) == user_id)
        if keeping is not None:
            statement = statement.where(col(DBLoginSession.id) != keeping)
        return int((await self.session.exec(statement)).rowcount)

    async def of_user(self, user_id: int) -> list[LoginSessionRecord]:
        """The user's unexpired sessions, the most recently used first."""
        statement = (
            select(DBLoginSession)
            .where(col(DBLoginSession.user_id) == user_id, col(DBLoginSession.expires_at) > _NOW)
            .order_by(col(DBLoginSession.last_used_at).desc(), col(DBLoginSession.created_at).desc())
        )
        fields = set(LoginSessionRecord.__dataclass_fields__)
        return [
            LoginSessionRecord(**row.model_dump(include=fields)) for row in (await self.session.exec(statement)).all()
        ]

    async def prune(self) -> tuple[int, int]:
        """Delete expired sessions and expired refresh tokens; how many of each."""
        sessions = await self.session.exec(delete(DBLoginSession).where(col(DBLoginSession.expires_at) <= _NOW))
        tokens = await self.session.exec(delete(DBRefreshToken).where(col(DBRefreshToken.expires_at) <= _NOW))
        return int(sessions.rowcount), int(tokens.rowcount)

    async def _add_token(self, session_id: uuid.UUID, token_hash: str, lifetime: timedelta) -> None:
        values = {"token_hash": token_hash, "session_id": session_id, "expires_at": _NOW + lifetime}
        await self.session.exec(insert(DBRefreshToken).values(values))
