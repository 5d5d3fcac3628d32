"""Request and response bodies of the API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.account_rules import Password, UserCreate
from app.repositories.login_sessions import LoginSessionRecord
from app.repositories.users import UserRecord

__all__ = ["UserCreate"]  # the sign-up body is the account rules' own


class UserRead(msgspec.Struct):
    """A registered user, as the API shows it: never the password or its hash."""

    id: Annotated[int, Meta(examples=[1])]
    username: Annotated[str, Meta(examples=["test"])]
    email: Annotated[str, Meta(examples=["test@example.com"])]
    full_name: Annotated[str, Meta(examples=["Test User"])] | None
    roles: Annotated[list[str], Meta(examples=[["user"]])]
    created_at: Annotated[datetime, Meta(examples=["2026-11-24T12:00:00Z"])]


class Health(msgspec.Struct):
    status: str
    database: str


class Readiness(msgspec.Struct):
    """Whether this instance should get traffic: its database answers, and its release can run on the schema."""

    status: Annotated[str, Meta(examples=["ready"])]
    database: Annotated[str, Meta(examples=["ok"])]
    schema: Annotated[
        str,
        Meta(
            description="`at head`; where the schema stands when this release runs on it all the same (a newer "
            "release's expand revisions applied, or this release's contract revisions pending); or `not compatible: "
            "` and why",
            examples=["at head"],
        ),
    ]


class UserDetail(UserRead):
    """A user as its owner and the admins see it."""

    is_active: bool
    email_verified: Annotated[bool, Meta(description="whether the owner confirmed the address (a mailed token)")]


class UserPage(msgspec.Struct):
    """One page of users, by id."""

    items: list[UserDetail]
    next: Annotated[int | None, Meta(description="`after` for the next page; null on the last page")]


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """What an admin may change on a user: only whether it is active."""

    is_active: bool


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A login by username or email."""

    username: Annotated[str, Meta(min_length=1, max_length=320, description="username or email")]
    password: Annotated[str, Meta(min_length=1, max_length=128)]


# A password typed to confirm who is asking: checked against the stored hash, so only its length is bounded.
PasswordGiven = Annotated[str, Meta(min_length=1, max_length=128)]
# 43 characters as issued; the bound only keeps junk out.
RefreshTokenValue = Annotated[str, Meta(min_length=1, max_length=128, description="the refresh token to redeem")]


class AccessToken(msgspec.Struct):
    """A bearer token for requests, and the refresh token that gets the next one."""

    access_token: str
    token_type: str
    expires_in: Annotated[int, Meta(description="seconds the access token is valid")]
    refresh_token: Annotated[
        str, Meta(description="single use: `POST /api/v1/refresh` answers a new one; a used one ends the session")
    ]
    refresh_expires_in: Annotated[int, Meta(description="seconds the refresh token is valid")]


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: RefreshTokenValue


class LogoutRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Which sessions end; the body may be left out."""

    all: Annotated[bool, Meta(description="true: every session of the user, not only this one")] = False


class SessionRead(msgspec.Struct):
    """A login of the user: where (the client's User-Agent) and when."""

    id: uuid.UUID
    user_agent: Annotated[str, Meta(examples=["Mozilla/5.0 (X11; Linux x86_64)"])] | None
    created_at: Annotated[datetime, Meta(description="the login")]
    last_used_at: Annotated[datetime, Meta(description="the last login or refresh")]
    expires_at: Annotated[datetime, Meta(description="when it ends unless refreshed")]
    current: Annotated[bool, Meta(description="the session of the token that asks")]


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: PasswordGiven
    new_password: Password


# What a mailed token looks like; the bound only keeps junk out.
MailedTokenValue = Annotated[str, Meta(min_length=1, max_length=128, description="the token from the mail")]
AnyEmail = Annotated[str, Meta(min_length=1, max_length=320, examples=["alice@example.com"])]


class EmailRequest(msgspec.Struct, forbid_unknown_fields=True):
    """An address to mail, if an account has it."""

    email: AnyEmail


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: MailedTokenValue


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    token: MailedTokenValue
    new_password: Password


class Accepted(msgspec.Struct):
    """The request was taken; the same answer whether or not an account has the address."""

    detail: Annotated[str, Meta(examples=["If an account has this address, a mail is on its way"])]


class AccountDeletion(msgspec.Struct, forbid_unknown_fields=True):
    password: Annotated[PasswordGiven, Meta(description="the account's password, to confirm")]


def user_read(user: UserRecord) -> UserRead:
    """The public view of a user: what sign-up answers."""
    return UserRead(**_public_fields(user))


def user_detail(user: UserRecord) -> UserDetail:
    """The view of the user itself and of admins: the public fields and whether it is active."""
    return UserDetail(**_public_fields(user), is_active=user.is_active, email_verified=user.email_verified)


def _public_fields(user: UserRecord) -> dict[str, Any]:
    names = ("id", "username", "email", "full_name", "roles", "created_at")
    return {name: getattr(user, name) for name in names}


def session_read(record: LoginSessionRecord, current: uuid.UUID) -> SessionRead:
    return SessionRead(
        id=record.id,
        user_agent=record.user_agent,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        expires_at=record.expires_at,
        current=record.id == current,
    )
