"""Who is calling and how often: JWT bearer tokens (Litestar's JWTAuth), role guards, and per-address rate limits.

Handlers declare what they need where they are written: `security=BEARER` (the document asks for a token there),
`guards=[require_role(...)]`, and `middleware=[AddressRateLimit]`; the values come from the settings the app was built
with.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.openapi.spec import SecurityRequirement
from litestar.security.jwt import JWTAuth, Token
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import ASGIApp, Guard, Receive, Scope, Send

from app.db.models import MAX_ID
from app.repositories.user_lookup import ActiveUserLookup
from app.repositories.users import UserRecord
from app.roles import RoleName
from app.settings import Settings

# Handlers marked `exclude_from_auth=True` (sign-up, login, health) need no token; nor does the API's own document.
PUBLIC_PATHS = ["^/schema(/|$)"]
RATE_LIMIT_STORE = "rate_limit"
# The document's name for the bearer token; `security=BEARER` puts it on the operations that ask for one.
BEARER_SCHEME = "BearerToken"
BEARER: list[SecurityRequirement] = [{BEARER_SCHEME: []}]


# The claim (in Litestar's `extras`) naming the session an access token belongs to; OpenID Connect's name for it.
SESSION_CLAIM = "sid"


async def retrieve_user(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> UserRecord | None:
    """The token's user, read fresh so a deactivation, a role change or a logout counts at once."""
    try:
        user_id = int(token.sub)
        session_id = token_session(token)
    except ValueError:
        return None
    if not 1 <= user_id <= MAX_ID:
        return None
    # Read afresh on every request: a deactivation, a role change or an ended session counts at the next one, on
    # every instance.
    lookup: ActiveUserLookup = connection.app.state.user_lookup
    return await lookup(user_id, session_id)


def token_session(token: Token) -> uuid.UUID:
    """The id of the session the access token belongs to; ValueError when it names none."""
    return uuid.UUID(str(token.extras.get(SESSION_CLAIM)))


def build_jwt_auth(settings: Settings) -> JWTAuth[UserRecord]:
    return JWTAuth[UserRecord](
        retrieve_user_handler=retrieve_user,
        token_secret=settings.jwt_secret.get_secret_value(),
        default_token_expiration=timedelta(minutes=settings.access_token_minutes),
        exclude=PUBLIC_PATHS,
        openapi_security_scheme_name=BEARER_SCHEME,
    )


def without_global_security(jwt_auth: JWTAuth[UserRecord], app_config: AppConfig) -> AppConfig:
    """JWTAuth's app setup, less the bearer requirement it puts on every operation of the document."""
    app_config = jwt_auth.on_app_init(app_config)
    if app_config.openapi_config is not None and app_config.openapi_config.security:
        kept = [item for item in app_config.openapi_config.security if item not in BEARER]
        app_config.openapi_config.security = kept or None
    return app_config


class AccessTokens:
    """Issues signed bearer tokens and knows the sessions' lifetime; a plain class, so handlers can have it injected."""

    def __init__(self, jwt_auth: JWTAuth[UserRecord], settings: Settings) -> None:
        self._jwt_auth = jwt_auth
        self.session_lifetime = timedelta(days=settings.refresh_token_days)
        self.require_verified_email = settings.require_verified_email

    @property
    def lifetime_seconds(self) -> int:
        return int(self._jwt_auth.default_token_expiration.total_seconds())

    def issue(self, user_id: int, session_id: uuid.UUID) -> str:
        return self._jwt_auth.create_token(identifier=str(user_id), token_extras={SESSION_CLAIM: str(session_id)})


def require_role(*allowed: RoleName) -> Guard:
    """A guard that lets through users holding any of `allowed`; others get 403."""
    names = {str(role) for role in allowed}

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        user: UserRecord = connection.user
        if not names & set(user.roles):
            raise PermissionDeniedException(f"This needs the role {' or '.join(sorted(names))}")

    return guard


def rate_limit(settings: Settings) -> RateLimitConfig:
    """Sign-up and login attempts per client address and minute."""
    return RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_minute),
        store=RATE_LIMIT_STORE,
    )


class AddressRateLimit:
    """Litestar's rate limit per client address, at the app's RATE_LIMIT_PER_MINUTE (`app.state.rate_limit`).

    A handler opts in with `middleware=[AddressRateLimit]`. Every throttled operation counts against one limit per
    address (the store's key is the client, not the route); the other handlers do not pay for the limiter at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limited: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._limited is None:  # built on the first request: the limit is the app's, not known at import
            self._limited = RateLimitMiddleware(self.app, scope["litestar_app"].state.rate_limit)
        await self._limited(scope, receive, send)


def rate_limit_store(settings: Settings) -> Store:
    """In memory for one instance; Redis when REDIS_URL is set, so several instances share one count."""
    if settings.redis_url:
        return RedisStore.with_client(url=settings.redis_url, namespace=f"{settings.api_db_name}:rate-limit")
    return MemoryStore()
