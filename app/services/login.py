"""Logging in: verify a password off the event loop, with no database connection held while it runs."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import EmailNotVerifiedError, HashingOverloadedError, LockedOutError
from app.kit.lockout import LoginLockout
from app.kit.passwords import PasswordHashing
from app.repositories.users import UserRecord, UserRepository
from app.services.login_sessions import SessionGrant, start_session


async def log_in(
    session_maker: async_sessionmaker[AsyncSession],
    hashing: PasswordHashing,
    lockout: LoginLockout,
    identifier: str,
    password: str,
    *,
    user_agent: str | None,
    lifetime: timedelta,
    require_verified_email: bool = False,
) -> SessionGrant | None:
    """A new session for the active user whose username or email and password match, else None.

    Raises LockedOutError, before any hashing, while the identifier waits after too many failures, and
    EmailNotVerifiedError for the right password of an unverified address when verification is required.
    """
    wait = await lockout.attempt(identifier)
    if wait > 0:
        raise LockedOutError(math.ceil(wait))
    found = await authenticate(session_maker, hashing, identifier, password)
    if found is None:
        return None
    user, password_hash = found
    await lockout.succeeded(identifier)
    if require_verified_email and not user.email_verified:
        raise EmailNotVerifiedError
    return await start_session(session_maker, user.id, user_agent, lifetime, password_hash=password_hash)


async def authenticate(
    session_maker: async_sessionmaker[AsyncSession], hashing: PasswordHashing, identifier: str, password: str
) -> tuple[UserRecord, str] | None:
    """The active user whose username or email and password match, with the hash the password matched; else None.

    Unknown users, wrong passwords and inactive users all cost one Argon2 verification, so timing tells nothing.
    A hash made with older parameters is replaced by one with the current parameters.
    """
    async with session_maker.begin() as session:
        found = await UserRepository(session).find_credentials(identifier)
    user, hashed = found if found else (None, None)
    if not await hashing.verify(hashed, password) or user is None or hashed is None:
        return None
    if not user.is_active:
        return None
    if hashing.needs_rehash(hashed):
        try:
            fresh = await hashing.hash(password)
        except HashingOverloadedError:
            # The old hash still verifies: the upgrade waits for a quieter login, the user does not.
            return user, hashed
        async with session_maker.begin() as session:
            # Only over the hash just verified: a password changed meanwhile must not come back.
            if not await UserRepository(session).set_password_hash(user.id, fresh, replacing=hashed):
                return None
        return user, fresh
    return user, hashed
