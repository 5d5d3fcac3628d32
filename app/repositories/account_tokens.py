"""Queries on `account_tokens`: single-use tokens mailed to users, by their digest."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from sqlalchemy import ColumnElement, and_, exists, func, insert, literal
from sqlmodel import col, delete, select, update

from app.db.models import DBAccountToken, DBUser
from app.repositories.base import Repository

_NOW = func.now()


class Purpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105  (a purpose, not a secret)


class AccountTokenRepository(Repository):
    """Mailed tokens, by their digest."""

    async def issue(
        self, user_id: int, purpose: Purpose, token_hash: str, lifetime: timedelta, *, unless_within: timedelta
    ) -> bool:
        """Store a token, unless one for the same user and purpose was issued `unless_within` ago or less (so that
        nobody can flood an inbox); whether it was stored."""
        # Two requests at once take turns on the user's row: the second sees the first's token and sends nothing.
        await self.session.exec(select(DBUser.id).where(col(DBUser.id) == user_id).with_for_update())
        recent = exists().where(
            col(DBAccountToken.user_id) == user_id,
            col(DBAccountToken.purpose) == purpose,
            col(DBAccountToken.created_at) > _NOW - unless_within,
        )
        values = select(literal(token_hash), literal(user_id), literal(str(purpose)), _NOW + lifetime).where(~recent)
        statement = insert(DBAccountToken).from_select(["token_hash", "user_id", "purpose", "expires_at"], values)
        return bool((await self.session.exec(statement)).rowcount)

    async def issue_first(self, user_id: int, purpose: Purpose, token_hash: str, lifetime: timedelta) -> None:
        """Store the first token of a user created in this transaction: no other transaction sees the user yet, so
        there is no earlier token to wait for or to check."""
        values = {"token_hash": token_hash, "user_id": user_id, "purpose": str(purpose), "expires_at": _NOW + lifetime}
        await self.session.exec(insert(DBAccountToken).values(values))

    async def usable(self, purpose: Purpose, token_hash: str) -> int | None:
        """The user id of an unused, unexpired token, or None; changes nothing."""
        statement = select(DBAccountToken.user_id).where(_usable(purpose, token_hash))
        return (await self.session.exec(statement)).one_or_none()

    async def use(self, purpose: Purpose, token_hash: str) -> int | None:
        """Mark the token used and return its user id; None when it is unknown, used or expired."""
        statement = (
            update(DBAccountToken)
            .where(_usable(purpose, token_hash))
            .values(used_at=_NOW)
            .returning(col(DBAccountToken.user_id))
        )
        return (await self.session.exec(statement)).scalar_one_or_none()

    async def use_all(self, user_id: int, purpose: Purpose) -> None:
        """Mark every unused token of the user for `purpose` used."""
        statement = update(DBAccountToken).where(
            col(DBAccountToken.user_id) == user_id,
            col(DBAccountToken.purpose) == purpose,
            col(DBAccountToken.used_at).is_(None),
        )
        await self.session.exec(statement.values(used_at=_NOW))

    async def prune(self) -> int:
        """Delete expired tokens, used or not; how many."""
        statement = delete(DBAccountToken).where(col(DBAccountToken.expires_at) <= _NOW)
        return int((await self.session.exec(statement)).rowcount)


def _usable(purpose: Purpose, token_hash: str) -> ColumnElement[bool]:
    return and_(
        col(DBAccountToken.token_hash) == token_hash,
        col(DBAccountToken.purpose) == purpose,
        col(DBAccountToken.used_at).is_(None),
        col(DBAccountToken.expires_at) > _NOW,
    )
