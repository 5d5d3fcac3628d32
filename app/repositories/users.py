"""Queries on `users` and `user_roles`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import DBRole, DBUser, UserRoleLink

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
class CreatedUser:
    id: int
    username: str
    email: str
    full_name: str | None
    roles: list[str]
    created_at: datetime


class RoleMissingError(Exception):
    """The role to grant does not exist: the database was not seeded."""


class UserRepository:
    """Reads and writes users in a session; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create_with_role(self, user: NewUser, role: str) -> CreatedUser:
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
        row = (await self.session.execute(statement)).one()
        if row[2] != 1:
            raise RoleMissingError(role)
        return CreatedUser(
            id=row.id,
            username=user.username,
            email=user.email,
            full_name=user.full_name,
            roles=[role],
            created_at=row.created_at,
        )
