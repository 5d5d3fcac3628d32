"""Mailed tokens: POST /api/v1/password-reset (and /confirm), /verify-email (and /resend)."""

from __future__ import annotations

from typing import Annotated

from litestar import Router, post
from litestar.di import NamedDependency
from litestar.params import Body

from app.http.deps import Hashing, SessionMaker
from app.http.openapi import ApiOperation
from app.http.problems import CLOSED, problems
from app.http.schemas import Accepted, EmailRequest, PasswordReset, TokenRequest
from app.http.security import AddressRateLimit
from app.kit.lockout import LoginLockout
from app.kit.mail import Outbox
from app.services.mailed_tokens import (
    MailedTokens,
    request_password_reset,
    resend_verification,
    reset_password,
    verify_email,
)

Mails = NamedDependency[MailedTokens]
# One answer for every address: nothing tells whether an account has it.
ACCEPTED = Accepted(detail="If an account has this address, a mail is on its way")
BAD_TOKEN = {400: "The body breaks a rule, or the token is unknown, used already or expired"}


@post(
    "/password-reset",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Ask for a password reset",
    status_code=202,
    responses=problems(400, 413, 429, 503),
)
async def ask_password_reset(
    data: Annotated[EmailRequest, Body(schema_extra=CLOSED)],
    session_maker: SessionMaker,
    outbox: NamedDependency[Outbox],
    mails: Mails,
) -> Accepted:
    """Mail a single-use reset token (valid `PASSWORD_RESET_MINUTES`) to the account with this address, if any; the
    answer is the same either way. At most one mail a minute per account."""
    await request_password_reset(session_maker, outbox, mails, data.email)
    return ACCEPTED


@post(
    "/password-reset/confirm",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Reset the password",
    status_code=204,
    responses=problems(400, 413, 429, 503, described=BAD_TOKEN),
)
async def confirm_password_reset(
    data: Annotated[PasswordReset, Body(schema_extra=CLOSED)],
    session_maker: SessionMaker,
    hashing: Hashing,
    lockout: NamedDependency[LoginLockout],
) -> None:
    """Set a new password with a mailed reset token, which is then used up; every session of the account ends."""
    await reset_password(session_maker, hashing, lockout, data.token, data.new_password)


@post(
    "/verify-email",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Verify the email address",
    status_code=204,
    responses=problems(400, 413, 429, 503, described=BAD_TOKEN),
)
async def verify(data: Annotated[TokenRequest, Body(schema_extra=CLOSED)], session_maker: SessionMaker) -> None:
    """Confirm the address with the token mailed at sign-up (or by /verify-email/resend); single use."""
    await verify_email(session_maker, data.token)


@post(
    "/verify-email/resend",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Mail a new verification token",
    status_code=202,
    responses=problems(400, 413, 429, 503),
)
async def resend_verification_mail(
    data: Annotated[EmailRequest, Body(schema_extra=CLOSED)],
    session_maker: SessionMaker,
    outbox: NamedDependency[Outbox],
    mails: Mails,
) -> Accepted:
    """Mail a new verification token to the account with this address, if it is not verified yet; the answer is the
    same either way. At most one mail a minute per account."""
    await resend_verification(session_maker, outbox, mails, data.email)
    return ACCEPTED


# Anyone may call them: throttled per client address.
router = Router(
    "/",
    route_handlers=[ask_password_reset, confirm_password_reset, verify, resend_verification_mail],
    middleware=[AddressRateLimit],
)
