"""Granting and revoking roles, and (de)activating users: the admin's operations."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.repositories.roles import RoleRepository
from app.repositories.users import UserRecord, UserRepository


class NotFoundError(Exception):
    """The user or role named in the request does not exist."""


async def _user_and_role(session: AsyncSession, user_id: int, role: str) -> tuple[UserRepository, int]:
    users = UserRepository(session)
    if await users.get(user_id) is None:
        raise NotFoundError(f"No user with id {user_id}")
    role_id = await RoleRepository(session).id_of(role)
    if role_id is None:
        raise NotFoundError(f"No role named '{role}'")
    return users, role_id


async def grant_role(session: AsyncSession, user_id: int, role: str) -> UserRecord:
    users, role_id = await _user_and_role(session, user_id, role)
    await users.grant(user_id, role_id)
    return await _reload(users, user_id)


async def revoke_role(session: AsyncSession, user_id: int, role: str) -> UserRecord:
    users, role_id = await _user_and_role(session, user_id, role)
    await users.revoke(user_id, role_id)
    return await _reload(users, user_id)


async def set_active(session: AsyncSession, user_id: int, active: bool) -> UserRecord:
    users = UserRepository(session)
    if await users.get(user_id) is None:
        raise NotFoundError(f"No user with id {user_id}")
    await users.set_active(user_id, active)
    return await _reload(users, user_id)


async def _reload(users: UserRepository, user_id: int) -> UserRecord:
    user = await users.get(user_id)
    assert user is not None  # it existed a statement ago, in this transaction
    return user
