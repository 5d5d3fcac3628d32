"""POST /api/v1/login and GET /api/v1/me."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.openapi.spec import Link
from litestar.params import Body
from litestar.security.jwt import Token
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.http.auth import AccessTokens
from app.http.openapi import linked
from app.http.problems import AUTHENTICATED, CLOSED, problems
from app.http.schemas import AccessToken, LoginRequest, UserDetail, user_detail
from app.repositories.users import UserRecord
from app.services.auth import authenticate
from app.services.passwords import PasswordHashing

BAD_CREDENTIALS = "Invalid username or password"


@post(
    "/login",
    exclude_from_auth=True,
    summary="Log in",
    status_code=200,
    responses=problems(400, 401, 413, 429, 503, described={401: f"{BAD_CREDENTIALS}, or the user is deactivated"}),
    operation_class=linked(
        200,
        CurrentUser=Link(
            operation_id="me",
            parameters={"header.Authorization": "Bearer {$response.body#/access_token}"},
            description="Read the user the token belongs to",
        ),
    ),
)
async def login(
    data: Annotated[LoginRequest, Body(schema_extra=CLOSED)],
    sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    hashing: NamedDependency[PasswordHashing],
    tokens: NamedDependency[AccessTokens],
) -> AccessToken:
    """Exchange a username (or email) and password for a bearer token."""
    user = await authenticate(sessions, hashing, data.username, data.password)
    if user is None:
        # One answer for unknown users, wrong passwords and inactive users alike.
        raise NotAuthorizedException(BAD_CREDENTIALS)
    return AccessToken(
        access_token=tokens.issue(user),
        token_type="bearer",  # noqa: S106  (the OAuth 2 token type, not a secret)
        expires_in=tokens.lifetime_seconds,
    )


@get("/me", summary="The current user", responses=problems(*AUTHENTICATED))
async def me(request: Request[UserRecord, Token, Any]) -> UserDetail:
    """The user the bearer token belongs to, with its roles."""
    return user_detail(request.user)
