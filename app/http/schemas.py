"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from app.accounts import UserCreate
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
    """Whether this instance should get traffic: its database answers and is at the newest migration."""

    status: Annotated[str, Meta(examples=["ready"])]
    database: Annotated[str, Meta(examples=["ok"])]
    schema: Annotated[str, Meta(examples=["at head"])]


class UserDetail(UserRead):
    """A user as its owner and the admins see it."""

    is_active: bool


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


class AccessToken(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: Annotated[int, Meta(description="seconds")]


def user_read(user: UserRecord) -> UserRead:
    """The public view of a user: what sign-up answers."""
    return UserRead(**_public_fields(user))


def user_detail(user: UserRecord) -> UserDetail:
    """The view of the user itself and of admins: the public fields and whether it is active."""
    return UserDetail(**_public_fields(user), is_active=user.is_active)


def _public_fields(user: UserRecord) -> dict[str, Any]:
    names = ("id", "username", "email", "full_name", "roles", "created_at")
    return {name: getattr(user, name) for name in names}
