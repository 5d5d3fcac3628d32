"""POST /api/v1/login, /refresh and /logout: login sessions and their tokens."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.openapi.spec import Link
from litestar.params import Body
from litestar.security.jwt import Token

from app.http.deps import Hashing, Session, SessionMaker
from app.http.openapi import ApiOperation, OptionalBodyOperation, linked
from app.http.problems import AUTHENTICATED, CLOSED, problems
from app.http.schemas import AccessToken, LoginRequest, LogoutRequest, RefreshRequest
from app.http.security import BEARER, AccessTokens, AddressRateLimit, token_session
from app.kit.lockout import LoginLockout
from app.kit.metrics import Metrics
from app.repositories.login_sessions import LoginSessionRepository
from app.repositories.users import UserRecord
from app.services.login import log_in
from app.services.login_sessions import SessionGrant, refresh_session

BAD_CREDENTIALS = "Invalid username or password"
BAD_REFRESH_TOKEN = "Invalid or expired refresh token; log in again"  # noqa: S105  (a message, not a secret)
Tokens = NamedDependency[AccessTokens]


@post(
    "/login",
    middleware=[AddressRateLimit],
    exclude_from_auth=True,
    summary="Log in",
    status_code=200,
    responses=problems(
        400,
        401,
        403,
        413,
        429,
        503,
        described={
            401: f"{BAD_CREDENTIALS}, or the user is deactivated",
            403: "The password is right, but the email address is not verified yet and the service requires it "
            "(`REQUIRE_VERIFIED_EMAIL`)",
            429: "Too many attempts from this address, or too many failed logins in a row for this username or email "
            "(whether or not it belongs to an account): retry after `Retry-After` seconds",
        },
    ),
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
    session_maker: SessionMaker,
    hashing: Hashing,
    lockout: NamedDependency[LoginLockout],
    tokens: Tokens,
    metrics: NamedDependency[Metrics],
    request: Request[Any, Any, Any],
) -> AccessToken:
    """Exchange a username (or email) and password for a bearer token and a refresh token: a new session.

    After `LOGIN_LOCKOUT_ATTEMPTS` failures in a row for one username or email, further attempts wait, longer after
    each failure."""
    grant = await log_in(
        session_maker,
        hashing,
        lockout,
        data.username,
        data.password,
        user_agent=request.headers.get("user-agent"),
        lifetime=tokens.session_lifetime,
        require_verified_email=tokens.require_verified_email,
    )
    if grant is None:
        metrics.failed_logins.inc()
        # One answer for unknown users, wrong passwords and inactive users alike.
        raise NotAuthorizedException(BAD_CREDENTIALS)
    return _tokens(tokens, grant)


@post(
    "/refresh",
    middleware=[AddressRateLimit],
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Refresh the tokens",
    status_code=200,
    responses=problems(
        400,
        401,
        413,
        429,
        503,
        described={
            401: "The refresh token is unknown, expired, of a deactivated user, or was used already (which ends its "
            "session: its newest refresh token and its access tokens stop working too)"
        },
    ),
)
async def refresh(
    data: Annotated[RefreshRequest, Body(schema_extra=CLOSED)], session_maker: SessionMaker, tokens: Tokens
) -> AccessToken:
    """A new access token and a new refresh token for a refresh token, which is then used up."""
    grant = await refresh_session(session_maker, data.refresh_token, tokens.session_lifetime)
    if grant is None:
        raise NotAuthorizedException(BAD_REFRESH_TOKEN)
    return _tokens(tokens, grant)


@post(
    "/logout",
    summary="Log out",
    security=BEARER,
    status_code=204,
    operation_class=OptionalBodyOperation,
    responses=problems(400, *AUTHENTICATED, 413),
)
async def logout(
    request: Request[UserRecord, Token, Any],
    session: Session,
    data: Annotated[LogoutRequest, Body(schema_extra=CLOSED)] = LogoutRequest(),  # noqa: B008  (frozen: shared safely)
) -> None:
    """End this session (`{"all": true}`: every session of the user): its access and refresh tokens stop working at
    once, on every instance."""
    login_sessions = LoginSessionRepository(session)
    if data.all:
        await login_sessions.end_all(request.user.id)
    else:
        await login_sessions.end(token_session(request.auth), user_id=request.user.id)


def _tokens(tokens: AccessTokens, grant: SessionGrant) -> AccessToken:
    return AccessToken(
        access_token=tokens.issue(grant.user_id, grant.session_id),
        token_type="bearer",  # noqa: S106  (the OAuth 2 token type, not a secret)
        expires_in=tokens.lifetime_seconds,
        refresh_token=grant.refresh_token,
        refresh_expires_in=int(tokens.session_lifetime.total_seconds()),
    )


router = Router("/", route_handlers=[login, refresh, logout])
