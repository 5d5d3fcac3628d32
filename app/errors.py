"""Errors a person reads, each saying what is wrong and what to do: the CLI's, and the domain's the API maps."""

from __future__ import annotations

from alembic.util import CommandError


class SetupError(CommandError):
    """The database or its settings are not in a state the command can work with.

    A subclass of Alembic's `CommandError`, so plain `alembic` prints `FAILED: <message>` instead of a traceback.
    """


class ForeignDatabaseError(SetupError):
    """The target database belongs to MLflow or to another Alembic project."""


class SchemaNotAtHeadError(SetupError):
    """The database schema is behind (or ahead of) the migrations in this checkout."""


class DomainError(Exception):
    """A request the account rules refuse; the HTTP layer maps each kind to one status, in one place."""

    retry_after: int | None = None  # seconds the client should wait before trying again, when it may


class NotFoundError(DomainError):
    """The user or role a request names does not exist."""


class ConflictError(DomainError):
    """The request contradicts the current state."""


class AlreadyRegisteredError(ConflictError):
    """The username or email belongs to another user already."""

    def __init__(self, field: str) -> None:
        super().__init__(f"This {field} is already registered")
        self.field = field


class LastAdminError(ConflictError):
    """The change would leave no active admin, and nobody could manage roles any more."""


class RoleMissingError(DomainError):
    """The role to grant does not exist: the database was not seeded."""


class UnavailableError(DomainError):
    """The service cannot take this request now; the client may retry after `retry_after` seconds."""

    retry_after: int

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HashingOverloadedError(UnavailableError):
    """So many password hashes are queued that this one would wait too long."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many password checks at once; retry shortly", retry_after)


class WrongPasswordError(DomainError):
    """The password given to confirm a change is not the account's."""

    def __init__(self) -> None:
        super().__init__("The password is wrong")


class LockedOutError(DomainError):
    """Too many failed logins in a row for this username or email: it waits `retry_after` seconds."""

    retry_after: int

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins for this username or email; retry in {retry_after} s")
        self.retry_after = retry_after


class InvalidTokenError(DomainError):
    """A mailed token that is unknown, used already or expired."""

    def __init__(self) -> None:
        super().__init__("The token is invalid, used already or expired; ask for a new one")


class EmailNotVerifiedError(DomainError):
    """The service requires a verified address before login, and this account's is not."""

    def __init__(self) -> None:
        super().__init__(
            "Verify your email address first: use the token mailed at sign-up, or ask for a new one at "
            "/api/v1/verify-email/resend"
        )
