"""GET and DELETE /api/v1/me, GET /api/v1/me/sessions, POST /api/v1/me/password: the caller's own account."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, delete, get, post
from litestar.params import Body
from litestar.security.jwt import Token

from app.http.deps import Hashing, Session, SessionMaker
from app.http.openapi import ApiOperation
from app.http.problems import AUTHENTICATED, CLOSED, problems
from app.http.schemas import AccountDeletion, PasswordChange, SessionRead, UserDetail, session_read, user_detail
from app.http.security import BEARER, AddressRateLimit, token_session
from app.repositories.login_sessions import LoginSessionRepository
from app.repositories.users import UserRecord
from app.services.own_account import change_password, delete_account

Caller = Request[UserRecord, Token, Any]
WRONG_PASSWORD = {403: "The password is wrong; nothing changed"}


@get("/me", summary="The current user", operation_class=ApiOperation, responses=problems(*AUTHENTICATED))
async def me(request: Caller) -> UserDetail:
    """The user the bearer token belongs to, with its roles."""
    return user_detail(request.user)


@get(
    "/me/sessions",
    summary="The current user's sessions",
    operation_class=ApiOperation,
    responses=problems(*AUTHENTICATED),
)
async def my_sessions(request: Caller, session: Session) -> list[SessionRead]:
    """The user's sessions (logins not yet ended or expired), the most recently used first."""
    records = await LoginSessionRepository(session).of_user(request.user.id)
    current = token_session(request.auth)
    return [session_read(record, current) for record in records]


@post(
    "/me/password",
    summary="Change the password",
    middleware=[AddressRateLimit],
    operation_class=ApiOperation,
    status_code=204,
    responses=problems(400, *AUTHENTICATED, 403, 409, 413, 429, described=WRONG_PASSWORD),
)
async def change_my_password(
    request: Caller,
    data: Annotated[PasswordChange, Body(schema_extra=CLOSED)],
    session_maker: SessionMaker,
    hashing: Hashing,
) -> None:
    """Replace the password, given the current one; every other session of the user ends, this one goes on."""
    await change_password(
        session_maker, hashing, request.user.id, token_session(request.auth), data.current_password, data.new_password
    )


@delete(
    "/me",
    summary="Delete the current user",
    middleware=[AddressRateLimit],
    operation_class=ApiOperation,
    status_code=204,
    responses=problems(
        400,
        *AUTHENTICATED,
        403,
        409,
        413,
        429,
        described={**WRONG_PASSWORD, 409: "The user is the last active admin: make another user admin first"},
    ),
)
async def delete_me(
    request: Caller,
    data: Annotated[AccountDeletion, Body(schema_extra=CLOSED)],
    session_maker: SessionMaker,
    hashing: Hashing,
) -> None:
    """Delete the account, given its password: the user, its roles and its sessions are gone."""
    await delete_account(session_maker, hashing, request.user.id, data.password)


# The caller's own account: a bearer token for every one; the password checks are throttled too.
router = Router("/", route_handlers=[me, my_sessions, change_my_password, delete_me], security=BEARER)
