"""Tokens sent by mail: email verification and password reset, each single use and short-lived, stored as digests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.errors import InvalidTokenError
from app.kit.lockout import LoginLockout
from app.kit.mail import Mail, Outbox
from app.kit.passwords import PasswordHashing
from app.kit.tokens import new_token, token_digest
from app.repositories.account_tokens import AccountTokenRepository, Purpose
from app.repositories.login_sessions import LoginSessionRepository
from app.repositories.users import UserRecord, UserRepository
from app.settings import Settings

# At most one mail of a kind per user in this time, however often it is asked for: no flooding someone's inbox.
MAIL_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class MailedTokens:
    """What the mails say and how long their tokens last."""

    verification_lifetime: timedelta
    reset_lifetime: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> MailedTokens:
        return cls(
            timedelta(hours=settings.email_verification_hours), timedelta(minutes=settings.password_reset_minutes)
        )

    def verification_mail(self, user: UserRecord, token: str) -> Mail:
        hours = int(self.verification_lifetime.total_seconds() // 3600)
        return Mail(
            to=user.email,
            subject="Confirm your email address",
            body=f"Hello {user.username},\n\n"
            f"confirm that this address is yours with this token (valid {hours} hours, once):\n\n    {token}\n\n"
            'POST it to /api/v1/verify-email as {"token": "..."}.\n\n'
            "If you did not sign up, ignore this mail.\n",
        )

    def reset_mail(self, user: UserRecord, token: str) -> Mail:
        minutes = int(self.reset_lifetime.total_seconds() // 60)
        return Mail(
            to=user.email,
            subject="Reset your password",
            body=f"Hello {user.username},\n\n"
            f"someone (you, we hope) asked to reset your password. This token does it (valid {minutes} minutes, "
            f"once):\n\n    {token}\n\n"
            'POST it to /api/v1/password-reset/confirm as {"token": "...", "new_password": "..."}: every session '
            "of the account then ends.\n\n"
            "If you did not ask, ignore this mail: your password stays as it is.\n",
        )


async def _issue(
    session: AsyncSession,
    user: UserRecord,
    purpose: Purpose,
    lifetime: timedelta,
    mail: Callable[[UserRecord, str], Mail],
) -> Mail | None:
    """Store a token for the user in the caller's transaction; the mail to send once it commits (None: one went out
    within MAIL_INTERVAL)."""
    token, digest = new_token()
    issued = await AccountTokenRepository(session).issue(
        user.id, purpose, digest, lifetime, unless_within=MAIL_INTERVAL
    )
    return mail(user, token) if issued else None


async def issue_verification(session: AsyncSession, mails: MailedTokens, user: UserRecord) -> Mail | None:
    """Store a verification token for the user in the caller's transaction; the mail to send once it commits."""
    return await _issue(session, user, Purpose.VERIFY_EMAIL, mails.verification_lifetime, mails.verification_mail)


async def issue_first_verification(session: AsyncSession, mails: MailedTokens, user: UserRecord) -> Mail:
    """The verification token of a user created in the caller's transaction; the mail to send once it commits."""
    token, digest = new_token()
    await AccountTokenRepository(session).issue_first(
        user.id, Purpose.VERIFY_EMAIL, digest, mails.verification_lifetime
    )
    return mails.verification_mail(user, token)


async def resend_verification(
    session_maker: async_sessionmaker[AsyncSession], outbox: Outbox, mails: MailedTokens, email: str
) -> None:
    """A new verification mail to an active, unverified user with this address; nothing (and no sign of it) else."""
    async with session_maker.begin() as session:
        user = await UserRepository(session).find_by_email(email)
        if user is None or user.email_verified:
            return
        mail = await issue_verification(session, mails, user)
    if mail is not None:  # after the commit: the token in the mail exists
        outbox.send(mail)


async def verify_email(session_maker: async_sessionmaker[AsyncSession], token: str) -> None:
    """Mark the token's user verified and the token used; InvalidTokenError for an unknown, used or expired token."""
    async with session_maker.begin() as session:
        user_id = await AccountTokenRepository(session).use(Purpose.VERIFY_EMAIL, token_digest(token))
        if user_id is None:
            raise InvalidTokenError
        await UserRepository(session).mark_email_verified(user_id)


async def request_password_reset(
    session_maker: async_sessionmaker[AsyncSession], outbox: Outbox, mails: MailedTokens, email: str
) -> None:
    """A reset mail to the active user with this address; nothing (and no sign of it) for any other address."""
    async with session_maker.begin() as session:
        user = await UserRepository(session).find_by_email(email)
        if user is None:
            return
        mail = await _issue(session, user, Purpose.RESET_PASSWORD, mails.reset_lifetime, mails.reset_mail)
    if mail is not None:  # after the commit: the token in the mail exists
        outbox.send(mail)


async def reset_password(
    session_maker: async_sessionmaker[AsyncSession],
    hashing: PasswordHashing,
    lockout: LoginLockout,
    token: str,
    new_password: str,
) -> None:
    """Set the password of the token's user and end all its sessions; InvalidTokenError for an unknown, used or
    expired token. The mail reached the owner, so the address counts as verified too."""
    digest = token_digest(token)
    async with session_maker.begin() as session:
        known = await AccountTokenRepository(session).usable(Purpose.RESET_PASSWORD, digest)
    if known is None:
        raise InvalidTokenError  # before the costly hash
    hashed = await hashing.hash(new_password)  # no connection held meanwhile
    async with session_maker.begin() as session:
        tokens, users = AccountTokenRepository(session), UserRepository(session)
        user_id = await tokens.use(Purpose.RESET_PASSWORD, digest)  # used up by another request meanwhile: None
        user = await users.get(user_id) if user_id is not None else None
        if user is None:
            raise InvalidTokenError
        await users.set_password_hash(user.id, hashed)
        await users.mark_email_verified(user.id)
        await tokens.use_all(user.id, Purpose.RESET_PASSWORD)
        await LoginSessionRepository(session).end_all(user.id)
    # The owner is back in control: earlier failed logins no longer hold the account.
    for identifier in (user.username, user.email):
        await lockout.succeeded(identifier)
