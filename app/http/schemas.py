"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from email_validator import EmailNotValidError, validate_email
from msgspec import Meta

from app.repositories.users import UserRecord

Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=50,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="3–50 letters, digits, `_`, `.` or `-`; unique ignoring case",
        examples=["alice"],
    ),
]
Email = Annotated[str, Meta(max_length=320, description="unique ignoring case; stored in lower case")]
Password = Annotated[str, Meta(min_length=8, max_length=128, description="8–128 characters")]
FullName = Annotated[str, Meta(max_length=100)]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A sign-up. Unknown fields are refused, so no body can ask for a role."""

    username: Username
    email: Email
    password: Password
    full_name: FullName | None = None

    def __post_init__(self) -> None:
        # msgspec matches patterns with re.search, where `$` also accepts a trailing newline.
        if self.username.endswith("\n"):
            raise ValueError("Expected `str` matching regex '^[A-Za-z0-9_.-]+$' - at `$.username`")
        # Refused before the costly hash; PostgreSQL would refuse it after.
        if self.full_name is not None and "\x00" in self.full_name:
            raise ValueError("Expected `str` without NUL characters - at `$.full_name`")
        try:
            checked = validate_email(self.email, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValueError(f"{exc} - at `$.email`") from exc
        self.email = checked.normalized.lower()


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


class UserDetail(UserRead):
    """A user as its owner and the admins see it."""

    is_active: bool


class UserPage(msgspec.Struct):
    items: list[UserDetail]
    total: int
    page: int
    page_size: int


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
