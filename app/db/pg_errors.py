"""What PostgreSQL said, under SQLAlchemy's and asyncpg's wrappers: read one way everywhere."""

from __future__ import annotations

from typing import Any


def driver_error(exc: BaseException) -> Any:
    """asyncpg's own exception (its `sqlstate`, `constraint_name`, `detail`), under SQLAlchemy's wrapper or bare."""
    if hasattr(exc, "sqlstate") and not hasattr(exc, "orig"):
        return exc
    return getattr(getattr(exc, "orig", None), "__cause__", None)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE code PostgreSQL answered with, or None when the error did not come from the server."""
    code = getattr(driver_error(exc), "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return str(code) if code else None


def constraint_name(exc: BaseException) -> str | None:
    """The constraint or unique index a failed statement violated, or None."""
    name = getattr(driver_error(exc), "constraint_name", None)
    return str(name) if name else None
