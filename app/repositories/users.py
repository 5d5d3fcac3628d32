"""Queries on `users` and `user_roles`, written with the SQLModel models; statements built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select, update

from app.db.models import EMAIL_UNIQUE, USERNAME_UNIQUE, DBRole, DBUser, UserRoleLink
from app.db.pg_errors import constraint_name
from app.errors import AlreadyRegisteredError, RoleMissingError
from app.repositories.base import Repository, storable

# The unique indexes that decide who gets a name, and the field each one guards.
_UNIQUE_FIELDS = {str(USERNAME_UNIQUE.name): "username", str(EMAIL_UNIQUE.name): "email"}


@dataclass(frozen=True)
class NewUser:
    username: str
    email: str
    full_name: str | None
    hashed_password: str


@dataclass(frozen=True)
class UserRecord:
    """A user as the service uses it: never its password hash, always its role names."""

    id: int
    username: str
    email: str
    full_name: str | None
    is_active: bool
    roles: list[str]
    created_at: datetime
    email_verified: bool = False


# The user's role names, alphabetically: a correlated subquery on the user_roles primary key.
ROLE_NAMES = (
    select(func.array_agg(aggregate_order_by(col(DBRole.name), col(DBRole.name))))
    .join(UserRoleLink, col(UserRoleLink.role_id) == col(DBRole.id))
    .where(col(UserRoleLink.user_id) == col(DBUser.id))
    .scalar_subquery()
    .label("roles")
)
_WITH_ROLES = select(DBUser, ROLE_NAMES)
_BY_ID = _WITH_ROLES.where(col(DBUser.id) == bindparam("user_id"))
_WANTED = func.lower(bindparam("identifier"))
_CREDENTIALS = _WITH_ROLES.where(or_(func.lower(DBUser.username) == _WANTED, func.lower(DBUser.email) == _WANTED))


def user_record(user: Any, roles: list[str] | None) -> UserRecord:
    """A record from a `DBUser` (or a row with its columns) and its role names."""
    return UserRecord(
        id=user.id,
        username=user.username,
        email=user.email,
        full_name=user.full_name,
        is_active=user.is_active,
        roles=list(roles or ()),
        created_at=user.created_at,
        email_verified=user.email_verified_at is not None,
    )


class UserRepository(Repository):
    """Users and the roles they hold."""

    async def create_with_role(self, user: NewUser, role: str) -> UserRecord:
        """Insert the user and grant `role`; raises AlreadyRegisteredError when the username or email is taken."""
        # One statement (two CTEs) instead of an ORM flush, refresh and second insert: one round trip per sign-up.
        inserted = (
            insert(DBUser)
            .values(
                username=user.username,
                email=user.email,
                full_name=user.full_name,
                hashed_password=user.hashed_password,
            )
            .returning(col(DBUser.id), col(DBUser.created_at))
            .cte("inserted")
        )
        granted = (
            insert(UserRoleLink)
            .from_select(
                ["user_id", "role_id"],
                select(inserted.c.id, col(DBRole.id)).select_from(inserted).join(DBRole, col(DBRole.name) == role),
            )
            .returning(col(UserRoleLink.role_id))
            .cte("granted")
        )
        statement = select(
            inserted.c.id, inserted.c.created_at, select(func.count()).select_from(granted).scalar_subquery()
        )
        try:
            row = (await self.session.exec(statement)).one()
        except IntegrityError as exc:
            field = _UNIQUE_FIELDS.get(constraint_name(exc) or "")
            if field is None:
                raise
            raise AlreadyRegisteredError(field) from exc
        user_id, created_at, grants = row
        if grants != 1:
            raise RoleMissingError(role)
        return UserRecord(user_id, user.username, user.email, user.full_name, True, [role], created_at)

    async def get(self, user_id: int) -> UserRecord | None:
        """The user with its roles, or None."""
        row = (await self.session.exec(_BY_ID, params={"user_id": user_id})).one_or_none()
        return user_record(*row) if row else None

    async def find_credentials(self, identifier: str) -> tuple[UserRecord, str] | None:
        """The user whose username or email is `identifier` (ignoring case), with its password hash."""
        if not storable(identifier):
            return None
        row = (await self.session.exec(_CREDENTIALS, params={"identifier": identifier})).one_or_none()
        if row is None:
            return None
        user, roles = row
        return user_record(user, roles), user.hashed_password

    async def page(self, *, after: int, limit: int, role_id: int | None = None) -> tuple[list[UserRecord], int | None]:
        """Up to `limit` users with ids above `after`, by id (only holders of `role_id`, when given), and the
        `after` of the next page (None on the last).

        Keyset pages: each is one index range scan, as fast at a millionth user as at the first; nothing counts the
        whole table.
        """
        wanted = limit + 1  # one more than shown tells whether a next page exists
        statement = _WITH_ROLES.where(col(DBUser.id) > after)
        if role_id is not None:
            # A range of ix_user_roles_role_id_user_id: the role's holders above `after`, already in id order.
            holders = (
                select(UserRoleLink.user_id)
                .where(col(UserRoleLink.role_id) == role_id, col(UserRoleLink.user_id) > after)
                .order_by(col(UserRoleLink.user_id))
                .limit(wanted)
            )
            statement = _WITH_ROLES.where(col(DBUser.id).in_(holders))
        rows = (await self.session.exec(statement.order_by(col(DBUser.id)).limit(wanted))).all()
        users = [user_record(user, roles) for user, roles in rows[:limit]]
        return users, users[-1].id if len(rows) > limit else None

    async def grant(self, user_id: int, role_id: int) -> None:
        """Give the user the role; granting a role it holds already changes nothing."""
        statement = insert(UserRoleLink).values(user_id=user_id, role_id=role_id).on_conflict_do_nothing()
        await self.session.exec(statement)

    async def revoke(self, user_id: int, role_id: int) -> None:
        link = (col(UserRoleLink.user_id) == user_id, col(UserRoleLink.role_id) == role_id)
        await self.session.exec(delete(UserRoleLink).where(*link))

    async def count_active_holders(self, role_id: int, *, excluding: int) -> int:
        """How many active users other than `excluding` hold the role."""
        statement = (
            select(func.count())
            .select_from(DBUser)
            .join(UserRoleLink, col(UserRoleLink.user_id) == col(DBUser.id))
            .where(col(UserRoleLink.role_id) == role_id, col(DBUser.is_active), col(DBUser.id) != excluding)
        )
        return (await self.session.exec(statement)).one()

    async def set_active(self, user_id: int, active: bool) -> None:
        await self.session.exec(update(DBUser).where(col(DBUser.id) == user_id).values(is_active=active))

    async def set_password_hash(self, user_id: int, hashed_password: str, *, replacing: str | None = None) -> bool:
        """Store the new hash (only over `replacing`, when given); whether it was stored."""
        statement = update(DBUser).where(col(DBUser.id) == user_id).values(hashed_password=hashed_password)
        if replacing is not None:
            statement = statement.where(col(DBUser.hashed_password) == replacing)
        return bool((await self.session.exec(statement)).rowcount)

    async def password_hash(self, user_id: int) -> str | None:
        """The active user's password hash, or None."""
        statement = select(DBUser.hashed_password).where(col(DBUser.id) == user_id, col(DBUser.is_active))
        return (await self.session.exec(statement)).one_or_none()

    async def find_by_email(self, email: str) -> UserRecord | None:
        """The active user with this email (ignoring case), or None."""
        if not storable(email):
            return None
        wanted = func.lower(DBUser.email) == func.lower(email)
        row = (await self.session.exec(_WITH_ROLES.where(wanted, col(DBUser.is_active)))).one_or_none()
        return user_record(*row) if row else None

    async def mark_email_verified(self, user_id: int) -> None:
        """Record that the owner proved the address is theirs (the first proof counts; later ones change nothing)."""
        statement = update(DBUser).where(col(DBUser.id) == user_id, col(DBUser.email_verified_at).is_(None))
        await self.session.exec(statement.values(email_verified_at=func.now()))

    async def remove(self, user_id: int) -> None:
        """Delete the user; its roles and sessions go with it (ON DELETE CASCADE)."""
        await self.session.exec(delete(DBUser).where(col(DBUser.id) == user_id))
