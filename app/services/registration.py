"""`register_user`: hash first, then one short transaction that creates the user with the `user` role."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.repositories.users import NewUser, UserRecord, UserRepository
from app.roles import RoleName
from app.services.passwords import PasswordHashing

# The unique indexes that decide who gets a name, and the field each one guards.
UNIQUE_FIELDS = {"uq_users_username_lower": "username", "uq_users_email_lower": "email"}


class AlreadyRegisteredError(Exception):
    """The username or email belongs to another user already."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is already registered")
        self.field = field


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
    try:
        return await UserRepository(session).create_with_role(new_user, RoleName.USER)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
        if constraint not in UNIQUE_FIELDS:
            raise
        raise AlreadyRegisteredError(UNIQUE_FIELDS[constraint]) from exc
