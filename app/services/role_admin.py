"""Granting and revoking roles, (de)activating and removing users, never leaving no active admin."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import LastAdminError, NotFoundError
from app.repositories.roles import RoleRepository
from app.repositories.users import UserRecord, UserRepository
from app.roles import RoleName


async def grant_role(session: AsyncSession, user_id: int, role: str) -> UserRecord:
    users = UserRepository(session)
    await _existing_user(users, user_id)
    await users.grant(user_id, await _existing_role(session, role))
    return await _existing_user(users, user_id)


async def revoke_role(session: AsyncSession, user_id: int, role: str) -> UserRecord:
    users = UserRepository(session)
    if role == RoleName.ADMIN:
        await _lock_admins(session)
    user = await _existing_user(users, user_id)
    role_id = await _existing_role(session, role)
    if role == RoleName.ADMIN and RoleName.ADMIN in user.roles and user.is_active:
        await _keep_another_admin(users, user, role_id)
    await users.revoke(user_id, role_id)
    return await _existing_user(users, user_id)


async def set_active(session: AsyncSession, user_id: int, active: bool) -> UserRecord:
    users = UserRepository(session)
    admin_role = await _lock_admins(session)
    user = await _existing_user(users, user_id)
    if not active and admin_role is not None and RoleName.ADMIN in user.roles and user.is_active:
        await _keep_another_admin(users, user, admin_role)
    await users.set_active(user_id, active)
    return await _existing_user(users, user_id)


async def remove_user(session: AsyncSession, user_id: int) -> None:
    """Delete the user, its roles and its sessions; refused when it is the last active admin."""
    users = UserRepository(session)
    admin_role = await _lock_admins(session)
    user = await _existing_user(users, user_id)
    if admin_role is not None and RoleName.ADMIN in user.roles and user.is_active:
        await _keep_another_admin(users, user, admin_role)
    await users.remove(user_id)


async def _lock_admins(session: AsyncSession) -> int | None:
    # Taken before the user is read, so changes to admins take turns and each sees those before it: two admins
    # demoting each other cannot both succeed. Grants go on: their foreign key only shares the role.
    return await RoleRepository(session).id_of(RoleName.ADMIN, lock=True)


async def _keep_another_admin(users: UserRepository, user: UserRecord, admin_role: int) -> None:
    if await users.count_active_holders(admin_role, excluding=user.id) == 0:
        raise LastAdminError(
            f"'{user.username}' is the last active admin; make another user admin first (or run `just create-admin`)"
        )


async def _existing_user(users: UserRepository, user_id: int) -> UserRecord:
    user = await users.get(user_id)
    if user is None:
        raise NotFoundError(f"No user with id {user_id}")
    return user


async def _existing_role(session: AsyncSession, role: str) -> int:
    role_id = await RoleRepository(session).id_of(role)
    if role_id is None:
        raise NotFoundError(f"No role named '{role}'")
    return role_id
