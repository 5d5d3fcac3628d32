"""The Litestar application: `create_app(settings)` and the lifespan that owns the engine and the hashers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.di import Provide
from litestar.logging import LoggingConfig
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db.engine import (
    close_lookup_pool,
    connections_in_use,
    create_api_engine,
    create_lookup_pool,
    lookup_connections_in_use,
)
from app.db.migrations import Revisions, alembic_config
from app.db.provision import prepare_api_database
from app.http.auth import (
    RATE_LIMIT_STORE,
    AccessTokens,
    build_jwt_auth,
    rate_limit,
    rate_limit_store,
    without_global_security,
)
from app.http.bodies import strict_body
from app.http.dependencies import (
    Drain,
    provide_drain,
    provide_engine,
    provide_hashing,
    provide_lockout,
    provide_metrics,
    provide_outbox,
    provide_schema_heads,
    provide_session,
    provide_sessions,
)
from app.http.docs import docs_assets, openapi_config
from app.http.errors import EXCEPTION_HANDLERS
from app.http.observe import RequestObserver
from app.http.openapi import ApiOperation
from app.http.routes.admin import get_user, grant, list_users, revoke, update_user
from app.http.routes.auth import login, logout, refresh
from app.http.routes.health import health, live, ready
from app.http.routes.me import change_my_password, delete_me, me, my_sessions
from app.http.routes.metrics import metrics as metrics_endpoint
from app.http.routes.recovery import (
    ask_password_reset,
    confirm_password_reset,
    resend_verification_mail,
    verify,
)
from app.http.routes.users import register
from app.logs import AccessLog
from app.metrics import Metrics
from app.repositories.users import ActiveUserLookup
from app.services.bootstrap import bootstrap_database
from app.services.lockout import login_lockout
from app.services.mail import Outbox, mail_backend
from app.services.mailed_tokens import MailedTokens
from app.services.maintenance import prune_periodically
from app.services.passwords import PasswordHashing
from app.settings import Settings, get_settings

logger = logging.getLogger("app")
API_PREFIX = "/api/v1"
# What a stranger can call is throttled per client address, and so is every check of a password (a stolen access
# token must not guess the password at full speed); the other handlers do not pay for the rate limiter at all.
THROTTLED_HANDLERS = [
    register,
    login,
    refresh,
    ask_password_reset,
    confirm_password_reset,
    verify,
    resend_verification_mail,
]
THROTTLED_API_HANDLERS = [change_my_password, delete_me]
API_HANDLERS = [me, my_sessions, logout, list_users, get_user, grant, revoke, update_user]


def create_app(
    settings: Settings | None = None, *, bootstrapped: bool = False, metrics: Metrics | None = None
) -> Litestar:
    """The service; reads the settings once when none are given.

    Its startup migrates and seeds, unless the runner did that already (`bootstrapped`, as `just serve` does).
    `metrics` are the runner's when it shares them between workers or serves them on a port of their own.
    """
    settings = settings or get_settings()
    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        address = await prepare_api_database(settings)
        engine = create_api_engine(
            address,
            settings,
            pool_size=settings.db_pool_size,
            max_overflow=0,  # the pool size is the cap: a flood waits for pool_timeout, then gets 503
            pool_timeout=settings.db_pool_timeout,
        )
        hashing = None
        lookup_pool = None
        pruning: asyncio.Task[None] | None = None
        lockout = login_lockout(settings)
        outbox = Outbox(mail_backend(settings))
        refreshing: asyncio.Task[None] | None = None
        try:
            if not bootstrapped:
                report = await bootstrap_database(engine, settings)
                logger.log(logging.INFO if report.created else logging.DEBUG, "%s", report.summary())
            # Measuring one hash takes a moment of CPU: keep it off the event loop.
            hashing = started_hashing = await asyncio.to_thread(PasswordHashing, settings)
            app.state.engine = engine
            app.state.schema_heads = Revisions(alembic_config(settings, configure_logging=False)).heads
            lookup_pool = lookup = await create_lookup_pool(address, settings)
            app.state.user_lookup = ActiveUserLookup(lookup_pool, settings.db_pool_timeout, settings.api_db_schema)
            app.state.sessionmaker = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
            app.state.hashing = hashing
            app.state.lockout = lockout
            app.state.outbox = outbox
            outbox.start()
            pruning = asyncio.create_task(prune_periodically(app.state.sessionmaker), name="prune expired")
            if settings.metrics_enabled:  # else nobody reads the gauges
                metrics.watch(
                    hash_queue=lambda: started_hashing.pending,
                    pools={
                        "sessions": lambda: connections_in_use(engine),
                        "lookup": lambda: lookup_connections_in_use(lookup),
                    },
                )
                refreshing = asyncio.create_task(metrics.keep_refreshing(), name="refresh gauges")
            yield
        finally:
            for task in (refreshing, pruning):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await outbox.close()  # queued mails get a few seconds to go out
            if hashing is not None:
                hashing.close()
            await lockout.close()
            try:
                if lookup_pool is not None:
                    await close_lookup_pool(lookup_pool)
            finally:
                await engine.dispose()

    jwt_auth = build_jwt_auth(settings)
    tokens = AccessTokens(jwt_auth, settings)
    mails = MailedTokens.from_settings(settings)
    throttled = rate_limit(settings).middleware  # one limit per address, whichever throttled operation it calls
    # With METRICS_PORT the runner serves them on that port instead.
    scraped_here = [metrics_endpoint] if settings.metrics_enabled and settings.metrics_port is None else []
    app = Litestar(
        route_handlers=[
            health,
            live,
            ready,
            *scraped_here,
            docs_assets(),
            Router(
                API_PREFIX,
                before_request=strict_body,
                route_handlers=[
                    Router("/", route_handlers=THROTTLED_HANDLERS, middleware=[throttled]),
                    # The document puts the bearer token on these operations only, where the service asks for it.
                    Router("/", route_handlers=API_HANDLERS, security=[jwt_auth.security_requirement]),
                    Router(
                        "/",
                        route_handlers=THROTTLED_API_HANDLERS,
                        middleware=[throttled],
                        security=[jwt_auth.security_requirement],
                    ),
                ],
            ),
        ],
        on_app_init=[lambda config: without_global_security(jwt_auth, config)],
        stores={RATE_LIMIT_STORE: rate_limit_store(settings)},
        lifespan=[lifespan],
        dependencies={
            "engine": Provide(provide_engine, sync_to_thread=False),
            "sessions": Provide(provide_sessions, sync_to_thread=False),
            "session": Provide(provide_session),
            "hashing": Provide(provide_hashing, sync_to_thread=False),
            "lockout": Provide(provide_lockout, sync_to_thread=False),
            "schema_heads": Provide(provide_schema_heads, sync_to_thread=False),
            "drain": Provide(provide_drain, sync_to_thread=False),
            "tokens": Provide(lambda: tokens, sync_to_thread=False),
            "mails": Provide(lambda: mails, sync_to_thread=False),
            "outbox": Provide(provide_outbox, sync_to_thread=False),
            "metrics": Provide(provide_metrics, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        # The runner owns the root logger (`just serve` sets it up); unexpected errors are logged by our 500 handler.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="never"),
        openapi_config=openapi_config(version="0.1.0"),
    )
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            # Litestar takes the operation class per handler: set once here rather than on each decorator.
            if not issubclass(handler.operation_class, ApiOperation):
                handler.operation_class = ApiOperation
    app.state.drain = Drain()  # before the lifespan: the runner turns it on at SIGTERM
    app.state.metrics = metrics
    # Around Litestar's own handler, not in its middleware stack: that runs only for matched routes, and the request
    # id and the counts must cover a 404 and every error answer too.
    counted = metrics if settings.metrics_enabled else None
    app.asgi_handler = RequestObserver(app.asgi_handler, counted, AccessLog(settings.log_format))
    return app
