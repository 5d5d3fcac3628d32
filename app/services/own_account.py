"""What users do to their own account: change the password, delete the account. Both confirm the password first."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import ConflictError, WrongPasswordError
from app.kit.passwords import PasswordHashing
from app.repositories.login_sessions import LoginSessionRepository
from app.repositories.users import UserRepository
from app.services.role_admin import remove_user


async def change_password(
    session_maker: async_sessionmaker[AsyncSession],
    hashing: PasswordHashing,
    user_id: int,
    session_id: uuid.UUID,
    current: str,
    new: str,
) -> None:
    """Replace the password and end every other session of the user; WrongPasswordError when `current` is wrong."""
    old_hash = await _confirmed_hash(session_maker, hashing, user_id, current)
    fresh = await hashing.hash(new)  # no connection held meanwhile, as for every hash
    async with session_maker.begin() as session:
        if not await UserRepository(session).set_password_hash(user_id, fresh, replacing=old_hash):
            raise ConflictError("The password changed meanwhile; log in again and retry")
        await LoginSessionRepository(session).end_all(user_id, keeping=session_id)


async def delete_account(
    session_maker: async_sessionmaker[AsyncSession], hashing: PasswordHashing, user_id: int, password: str
) -> None:
    """Delete the user with its roles and sessions; refused for a wrong password and for the last active admin."""
    await _confirmed_hash(session_maker, hashing, user_id, password)
    async with session_maker.begin() as session:
        await remove_user(session, user_id)


async def _confirmed_hash(
    session_maker: async_sessionmaker[AsyncSession], hashing: PasswordHashing, user_id: int, password: str
) -> str:
    async with session_maker.begin() as session:
        hashed = await UserRepository(session).password_hash(user_id)
    # The connection went back to the pool before the verification starts.
    if not await hashing.verify(hashed, password) or hashed is None:
        raise WrongPasswordError
    return hashed
