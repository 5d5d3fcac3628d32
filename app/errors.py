"""Errors a person reads: each says what is wrong and what to do about it."""

from alembic.util import CommandError


class SetupError(CommandError):
    """The database or its settings are not in a state the command can work with.

    A subclass of Alembic's `CommandError`, so plain `alembic` prints `FAILED: <message>` instead of a traceback.
    """


class ForeignDatabaseError(SetupError):
    """The target database belongs to MLflow or to another Alembic project."""


class SchemaNotAtHeadError(SetupError):
    """The database schema is behind (or ahead of) the migrations in this checkout."""
