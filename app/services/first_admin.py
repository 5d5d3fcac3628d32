"""`just create-admin`: the first admin account, created once and confirmed on later runs."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from argon2 import PasswordHasher
from sqlmodel.ext.asyncio.session import AsyncSession

from app.account_rules import UserCreate
from app.errors import SetupError
from app.migrations.guard import require_compatible
from app.migrations.revisions import Revisions
from app.repositories.roles import RoleRepository
from app.repositories.users import NewUser, UserRepository
from app.roles import RoleName


@dataclass(frozen=True)
class AdminReport:
    username: str
    created: bool
    granted: bool
    reactivated: bool = False

    def summary(self) -> str:
        if self.created:
            return f"Created admin '{self.username}'."
        changes = [
            *(["granted it the admin role"] if self.granted else []),
            *(["reactivated it"] if self.reactivated else []),
        ]
        if changes:
            return f"User '{self.username}' existed; {' and '.join(changes)} (password unchanged)."
        return f"User '{self.username}' is an admin already; nothing changed."


def validated_account(username: str, email: str, password: str) -> UserCreate:
    """The same rules as sign-up; raises SetupError naming what is wrong."""
    try:
        return msgspec.convert({"username": username, "email": email, "password": password}, UserCreate)
    except msgspec.ValidationError as exc:
        raise SetupError(f"invalid admin account: {exc}") from exc


async def create_admin(
    session: AsyncSession, revisions: Revisions, hasher: PasswordHasher, account: UserCreate, api_schema: str | None
) -> AdminReport:
    """Create the account with roles `user` and `admin`, or grant `admin` to the existing one; idempotent."""
    connection = await session.connection()
    await connection.run_sync(require_compatible, revisions, api_schema)
    admin_role = await RoleRepository(session).id_of(RoleName.ADMIN)
    if admin_role is None:
        raise SetupError("the admin role does not exist yet; run `just seed` first")
    users = UserRepository(session)
    found = await users.find_credentials(account.username) or await users.find_credentials(account.email)
    if found is not None:
        user, _ = found
        if (user.username.lower(), user.email) != (account.username.lower(), account.email):
            raise SetupError(
                f"username '{account.username}' or email '{account.email}' belongs to another account "
                f"('{user.username}', {user.email}); nothing changed"
            )
        # An admin who cannot log in is no admin: the command's promise is an account that works.
        granted, reactivated = RoleName.ADMIN not in user.roles, not user.is_active
        if granted:
            await users.grant(user.id, admin_role)
        if reactivated:
            await users.set_active(user.id, True)
        return AdminReport(user.username, created=False, granted=granted, reactivated=reactivated)
    new = NewUser(
        username=account.username,
        email=account.email,
        full_name=account.full_name,
        hashed_password=hasher.hash(account.password),
    )
    created = await users.create_with_role(new, RoleName.USER)
    await users.grant(created.id, admin_role)
    # The operator typed the address and vouches for it: the admin can log in even where verification is required.
    await users.mark_email_verified(created.id)
    return AdminReport(created.username, created=True, granted=True)
