"""Map every failure to one error shape: RFC 9457 problem details (`{type, title, status, detail, ...}`)."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping
from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from litestar import Request, Response
from litestar.exceptions import HTTPException, TooManyRequestsException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.db.pg_errors import constraint_name, driver_error, sqlstate
from app.errors import (
    AlreadyRegisteredError,
    ConflictError,
    DomainError,
    EmailNotVerifiedError,
    InvalidTokenError,
    LockedOutError,
    NotFoundError,
    UnavailableError,
    WrongPasswordError,
)
from app.http.problems import PROBLEM_MEDIA_TYPE, problem_body

logger = logging.getLogger("app.http")

DATABASE_RETRY_AFTER = 5
# Connection exceptions (08), insufficient resources such as too many connections (53), the server shutting down
# or restarting under a running query (57P01-57P03), and the authenticated read cancelled by its statement_timeout
# (57014): the database did not answer in time.
_OUTAGE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "57014")
# PostgreSQL refuses NUL in text (sqlstate 22021): the client sent it, so it is the client's error.
_UNTRANSLATABLE_TEXT = "22021"


def error_response(
    status_code: int, detail: str, headers: Mapping[str, str] | None = None, **extensions: Any
) -> Response[Any]:
    """An error answer; `extensions` add members such as `field` or `errors`."""
    body = problem_body(status_code, detail, **extensions)
    return Response(body, status_code=status_code, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def database_is_unavailable(exc: BaseException) -> bool:
    """True for a lost or unreachable database or an exhausted pool; other database errors are bugs to see."""
    if isinstance(exc, OSError | sqlalchemy.exc.TimeoutError):
        return True
    # The authenticated read runs on asyncpg itself: its lost-connection errors are outages too.
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "")).startswith(_OUTAGE_SQLSTATES)
    if isinstance(exc, asyncpg.ConnectionDoesNotExistError):
        return True
    if isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, asyncpg.DataError):
        return "clos" in str(exc)  # "connection is closed", "pool is closing"; other misuse is a bug to see
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError
        )
    return False


_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`")


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's 400, with `key` naming the field also for missing and unknown fields (msgspec says `data`)."""
    errors = exc.extra if isinstance(exc.extra, list) else []
    for error in errors:
        named = _FIELD_IN_MESSAGE.search(str(error.get("message", "")))
        if error.get("key") == "data" and named:
            error["key"] = named.group(1)
    if not errors:
        return error_response(400, exc.detail)
    return error_response(400, exc.detail, errors=errors)


# Each kind of domain error, its status; the most specific class that matches wins.
DOMAIN_STATUS: dict[type[DomainError], int] = {
    InvalidTokenError: 400,
    WrongPasswordError: 403,
    EmailNotVerifiedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    LockedOutError: 429,
    UnavailableError: 503,
}


def on_domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    """One mapping for every refusal the account rules make."""
    # The nearest kind in the error's ancestry decides, whatever order the table lists them in.
    status = next((DOMAIN_STATUS[kind] for kind in type(exc).__mro__ if kind in DOMAIN_STATUS), None)
    if status is None:
        return on_unexpected_error(request, exc)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    extensions = {"field": exc.field} if isinstance(exc, AlreadyRegisteredError) else {}
    return error_response(status, str(exc), headers=headers, **extensions)


def on_database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if database_is_unavailable(exc):
        logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(
            503, "The database is unavailable; retry shortly", headers={"Retry-After": str(DATABASE_RETRY_AFTER)}
        )
    # PostgreSQL's message can quote the failing row (a password hash among it): log where and what, not that.
    if sqlstate(exc) == _UNTRANSLATABLE_TEXT:
        logger.info("refused text with NUL on %s %s", request.method, request.url.path)
        return error_response(400, "Text must not contain NUL (\\u0000) characters")
    logger.error(
        "database error on %s %s: %s (sqlstate %s, constraint %s)\n%s",
        request.method,
        request.url.path,
        type(driver_error(exc) or exc).__name__,
        sqlstate(exc),
        constraint_name(exc),
        "".join(traceback.format_tb(exc.__traceback__)),
    )
    return error_response(500, "Internal server error")


def on_rate_limit_store_error(request: Request[Any, Any, Any], exc: redis.exceptions.RedisError) -> Response[Any]:
    # Without its shared count the limit cannot hold; refusing beats letting every attempt through.
    logger.warning("rate-limit store unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    retry = {"Retry-After": str(DATABASE_RETRY_AFTER)}
    return error_response(503, "The service cannot check its rate limit; retry shortly", headers=retry)


def on_rate_limited(request: Request[Any, Any, Any], exc: TooManyRequestsException) -> Response[Any]:
    headers = dict(exc.headers or {})
    # Litestar says when the window resets; Retry-After is the header clients and proxies act on.
    headers["Retry-After"] = headers.get("RateLimit-Reset", "60")
    return error_response(429, "Too many attempts from this address; retry later", headers=headers)


def on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """Litestar's own refusals (401, 403, 404, 405, 413, ...) in the same shape as ours."""
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return on_unexpected_error(request, exc)
    return error_response(exc.status_code, exc.detail, headers=exc.headers)


def on_unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "Internal server error")


EXCEPTION_HANDLERS = {
    HTTP_500_INTERNAL_SERVER_ERROR: on_unexpected_error,
    HTTPException: on_http_error,
    ValidationException: on_validation_error,
    DomainError: on_domain_error,
    redis.exceptions.RedisError: on_rate_limit_store_error,
    TooManyRequestsException: on_rate_limited,
    sqlalchemy.exc.SQLAlchemyError: on_database_error,
    asyncpg.PostgresError: on_database_error,
    asyncpg.InterfaceError: on_database_error,
    OSError: on_database_error,
}
