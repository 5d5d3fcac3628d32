"""`register_user`: hash first, then one short transaction that creates the user with the `user` role."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from app.repositories.users import NewUser, UserRecord, UserRepository
from app.roles import RoleName
from app.services.passwords import PasswordHashing


async def register_user(
    session: AsyncSession,
    hashing: PasswordHashing,
    *,
    username: str,
    email: str,
    password: str,
    full_name: str | None,
) -> UserRecord:
    """Create a user with the `user` role; raises AlreadyRegisteredError when the name or email is taken."""
    # The session has not touched the pool yet: no connection is held while the hash waits or runs.
    hashed_password = await hashing.hash(password)
    new_user = NewUser(username=username, email=email, full_name=full_name, hashed_password=hashed_password)
    return await UserRepository(session).create_with_role(new_user, RoleName.USER)
