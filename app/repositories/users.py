"""Queries on `users` and `user_roles`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.errors import constraint_name
from app.db.models import EMAIL_UNIQUE, USERNAME_UNIQUE, DBRole, DBUser, UserRoleLink
from app.errors import AlreadyRegisteredError, RoleMissingError

users = DBUser.__table__  # type: ignore[attr-defined]
roles = DBRole.__table__  # type: ignore[attr-defined]
user_roles = UserRoleLink.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NewUser:
    username: str
    email: str
    full_name: str | None
    hashed_password: str


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    email: str
    full_name: str | None
    is_active: bool
    roles: list[str]
    created_at: datetime


# The unique indexes that decide who gets a name, and the field each one guards.
_UNIQUE_FIELDS = {str(USERNAME_UNIQUE.name): "username", str(EMAIL_UNIQUE.name): "email"}


class UserRepository:
    """Reads and writes users in a session; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create_with_role(self, user: NewUser, role: str) -> UserRecord:
        """Insert the user and grant `role` in one statement; unique indexes raise IntegrityError on a taken name."""
        inserted = (
            sa.insert(users)
            .values(
                username=user.username,
                email=user.email,
                full_name=user.full_name,
                hashed_password=user.hashed_password,
            )
            .returning(users.c.id, users.c.created_at)
            .cte("inserted")
        )
        granted = (
            sa.insert(user_roles)
            .from_select(
                ["user_id", "role_id"],
                sa.select(inserted.c.id, roles.c.id).select_from(inserted.join(roles, roles.c.name == role)),
            )
            .returning(user_roles.c.role_id)
            .cte("granted")
        )
        statement = sa.select(
            inserted.c.id, inserted.c.created_at, sa.select(sa.func.count()).select_from(granted).scalar_subquery()
        )
        try:
            row = (await self.session.execute(statement)).one()
        except IntegrityError as exc:
            field = _UNIQUE_FIELDS.get(constraint_name(exc) or "")
            if field is None:
                raise
            raise AlreadyRegisteredError(field) from exc
        if row[2] != 1:
            raise RoleMissingError(role)
        return UserRecord(
            id=row.id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            is_active=True,
            roles=[role],
            created_at=row.created_at,
        )

    async def get(self, user_id: int) -> UserRecord | None:
        """The user with its roles, or None."""
        row = (await self.session.execute(_with_roles().where(users.c.id == user_id))).one_or_none()
        return _record(row) if row else None

    async def find_credentials(self, identifier: str) -> tuple[UserRecord, str] | None:
        """The user whose username or email is `identifier` (ignoring case), with its password hash."""
        wanted = sa.func.lower(identifier)
        statement = (
            _with_roles()
            .add_columns(users.c.hashed_password)
            .where(sa.or_(sa.func.lower(users.c.username) == wanted, sa.func.lower(users.c.email) == wanted))
        )
        row = (await self.session.execute(statement)).one_or_none()
        return (_record(row), row.hashed_password) if row else None

    async def page(self, *, role: str | None, offset: int, limit: int) -> tuple[list[UserRecord], int]:
        """Users by id, optionally only those holding `role`, and how many there are in all."""
        condition = sa.true()
        if role is not None:
            holders = (
                sa.select(user_roles.c.user_id)
                .join(roles, roles.c.id == user_roles.c.role_id)
                .where(roles.c.name == role)
            )
            condition = users.c.id.in_(holders)
        total = (
            await self.session.execute(sa.select(sa.func.count()).select_from(users).where(condition))
        ).scalar_one()
        statement = _with_roles().where(condition).order_by(users.c.id).offset(offset).limit(limit)
        rows = (await self.session.execute(statement)).all()
        return [_record(row) for row in rows], total

    async def grant(self, user_id: int, role_id: int) -> None:
        """Give the user the role; granting a role it holds already changes nothing."""
        statement = insert(user_roles).values(user_id=user_id, role_id=role_id).on_conflict_do_nothing()
        await self.session.execute(statement)

    async def revoke(self, user_id: int, role_id: int) -> None:
        statement = sa.delete(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.role_id == role_id)
        await self.session.execute(statement)

    async def count_active_holders(self, role_id: int, *, excluding: int) -> int:
        """How many active users other than `excluding` hold the role."""
        statement = (
            sa.select(sa.func.count())
            .select_from(users.join(user_roles, user_roles.c.user_id == users.c.id))
            .where(user_roles.c.role_id == role_id, users.c.is_active, users.c.id != excluding)
        )
        return (await self.session.execute(statement)).scalar_one()

    async def set_active(self, user_id: int, active: bool) -> None:
        await self.session.execute(sa.update(users).where(users.c.id == user_id).values(is_active=active))

    async def set_password_hash(self, user_id: int, hashed_password: str) -> None:
        await self.session.execute(
            sa.update(users).where(users.c.id == user_id).values(hashed_password=hashed_password)
        )


def _with_roles() -> sa.Select[tuple[Any, ...]]:
    role_names = sa.func.array_agg(aggregate_order_by(roles.c.name, roles.c.name)).filter(roles.c.name.is_not(None))
    return (
        sa.select(
            users.c.id,
            users.c.username,
            users.c.email,
            users.c.full_name,
            users.c.is_active,
            users.c.created_at,
            role_names.label("roles"),
        )
        .select_from(
            users.outerjoin(user_roles, user_roles.c.user_id == users.c.id).outerjoin(
                roles, roles.c.id == user_roles.c.role_id
            )
        )
        .group_by(users.c.id)
    )


def _record(row: sa.Row[Any]) -> UserRecord:
    return UserRecord(
        id=row.id,
        username=row.username,
        email=row.email,
        full_name=row.full_name,
        is_active=row.is_active,
        roles=list(row.roles or []),
        created_at=row.created_at,
    )
