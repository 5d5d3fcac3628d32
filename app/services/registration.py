"""`register_user`: hash first, then one short transaction that creates the user with the `user` role and its
verification token; the verification mail goes out once that commits."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.kit.mail import Outbox
from app.kit.passwords import PasswordHashing
from app.repositories.users import NewUser, UserRecord, UserRepository
from app.roles import RoleName
from app.services.mailed_tokens import MailedTokens, issue_first_verification


async def register_user(
    session_maker: async_sessionmaker[AsyncSession],
    hashing: PasswordHashing,
    outbox: Outbox,
    mails: MailedTokens,
    *,
    username: str,
    email: str,
    password: str,
    full_name: str | None,
) -> UserRecord:
    """Create a user with the `user` role and mail it a verification token; raises AlreadyRegisteredError when the
    name or email is taken."""
    # No connection is held while the hash waits or runs: the transaction starts after it.
    hashed_password = await hashing.hash(password)
    new_user = NewUser(username=username, email=email, full_name=full_name, hashed_password=hashed_password)
    async with session_maker.begin() as session:
        user = await UserRepository(session).create_with_role(new_user, RoleName.USER)
        mail = await issue_first_verification(session, mails, user)
    outbox.send(mail)  # queued: the request does not wait on the mail server
    return user
