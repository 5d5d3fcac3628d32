"""The account rules: what makes a username, an email, a password and a full name acceptable.

Neutral ground: sign-up (the HTTP layer) and `just create-admin` (the CLI) both hold accounts to these rules.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from email_validator import EmailNotValidError, validate_email
from msgspec import Meta

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
Email = Annotated[
    str,
    Meta(
        max_length=320,
        # Litestar takes `format` from here (msgspec has no format of its own).
        extra_json_schema={
            "description": "unique ignoring case; stored in lower case",
            "examples": ["alice@example.com"],
            "extra": {"format": "email"},
        },
    ),
]
Password = Annotated[str, Meta(min_length=8, max_length=128, description="8–128 characters")]
FullName = Annotated[str, Meta(max_length=100, pattern=r"^[^\x00]*$", description="at most 100 characters, no NUL")]


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
        try:
            # Addresses at .test (RFC 6761's name for testing) pass `format: email` and serve test setups.
            checked = validate_email(self.email, check_deliverability=False, test_environment=True)
        except EmailNotValidError as exc:
            raise ValueError(f"{exc} - at `$.email`") from exc
        self.email = checked.normalized.lower()
