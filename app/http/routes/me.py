"""GET and DELETE /api/v1/me, GET /api/v1/me/sessions, POST /api/v1/me/password: the caller's own account."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import Body
from litestar.security.jwt import Token
from sqlmodel.ext.asyncio.session import AsyncSession

from app.http.auth import token_session
from app.http.dependencies import Hashing, Sessions
from app.http.problems import AUTHENTICATED, CLOSED, problems
from app.http.schemas import AccountDeletion, PasswordChange, SessionRead, UserDetail, session_read, user_detail
from app.repositories.sessions import SessionRepository
from app.repositories.users import UserRecord
from app.services.account import change_password, delete_account

Caller = Request[UserRecord, Token, Any]
WRONG_PASSWORD = {403: "The password is wrong; nothing changed"}


@get("/me", summary="The current user", responses=problems(*AUTHENTICATED))
async def me(request: Caller) -> UserDetail:
    """The user the bearer token belongs to, with its roles."""
    return user_detail(request.user)


@get("/me/sessions", summary="The current user's sessions", responses=problems(*AUTHENTICATED))
async def my_sessions(request: Caller, session: NamedDependency[AsyncSession]) -> list[SessionRead]:
    """The user's sessions (logins not yet ended or expired), the most recently used first."""
    records = await SessionRepository(session).of_user(request.user.id)
    current = token_session(request.auth)
    return [session_read(record, current) for record in records]


@post(
    "/me/password",
    summary="Change the password",
    status_code=204,
    responses=problems(400, *AUTHENTICATED, 403, 409, 413, 429, described=WRONG_PASSWORD),
)
async def change_my_password(
    request: Caller, data: Annotated[PasswordChange, Body(schema_extra=CLOSED)], sessions: Sessions, hashing: Hashing
) -> None:
    """Replace the password, given the current one; every other session of the user ends, this one goes on."""
    await change_password(
        sessions, hashing, request.user.id, token_session(request.auth), data.current_password, data.new_password
    )


@delete(
    "/me",
    summary="Delete the current user",
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
    request: Caller, data: Annotated[AccountDeletion, Body(schema_extra=CLOSED)], sessions: Sessions, hashing: Hashing
) -> None:
    """Delete the account, given its password: the user, its roles and its sessions are gone."""
    await delete_account(sessions, hashing, request.user.id, data.password)
