"""The Litestar application: `create_app(settings)` assembles the routers, the dependencies and the error mapping."""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig

from app.http.bodies import strict_body
from app.http.deps import (
    Drain,
    provide_drain,
    provide_engine,
    provide_hashing,
    provide_lockout,
    provide_metrics,
    provide_outbox,
    provide_schema_readiness,
    provide_session,
    provide_session_maker,
)
from app.http.docs import docs_assets, openapi_config
from app.http.errors import EXCEPTION_HANDLERS
from app.http.lifespan import service_lifespan
from app.http.observe import RequestObserver
from app.http.routes import health, login, me, recovery, registration, users
from app.http.routes import metrics as metrics_route
from app.http.security import (
    RATE_LIMIT_STORE,
    AccessTokens,
    build_jwt_auth,
    rate_limit,
    rate_limit_store,
    without_global_security,
)
from app.kit.logs import AccessLog
from app.kit.metrics import Metrics
from app.services.mailed_tokens import MailedTokens
from app.settings import Settings, get_settings

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None, *, bootstrapped: bool = False, metrics: Metrics | None = None
) -> Litestar:
    """The service; reads the settings once when none are given.

    Its startup migrates and seeds, unless the runner did that already (`bootstrapped`, as `just serve` does).
    `metrics` are the runner's when it shares them between workers or serves them on a port of their own.
    """
    settings = settings or get_settings()
    metrics = metrics or Metrics()
    jwt_auth = build_jwt_auth(settings)
    tokens = AccessTokens(jwt_auth, settings)
    mails = MailedTokens.from_settings(settings)
    # With METRICS_PORT the runner serves them on that port instead.
    scraped_here = [metrics_route.router] if settings.metrics_enabled and settings.metrics_port is None else []
    app = Litestar(
        route_handlers=[
            health.router,
            *scraped_here,
            docs_assets(),
            Router(
                API_PREFIX,
                before_request=strict_body,
                route_handlers=[registration.router, login.router, recovery.router, me.router, users.router],
            ),
        ],
        on_app_init=[lambda config: without_global_security(jwt_auth, config)],
        stores={RATE_LIMIT_STORE: rate_limit_store(settings)},
        # The runner turns the drain on at SIGTERM; throttled handlers read the limit (security.AddressRateLimit).
        state=State({"drain": Drain(), "metrics": metrics, "rate_limit": rate_limit(settings)}),
        lifespan=[service_lifespan(settings, metrics, bootstrapped=bootstrapped)],
        dependencies={
            "engine": Provide(provide_engine, sync_to_thread=False),
            "session_maker": Provide(provide_session_maker, sync_to_thread=False),
            "session": Provide(provide_session),
            "hashing": Provide(provide_hashing, sync_to_thread=False),
            "lockout": Provide(provide_lockout, sync_to_thread=False),
            "schema_readiness": Provide(provide_schema_readiness, sync_to_thread=False),
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
    # Around Litestar's own handler, not in its middleware stack: that runs only for matched routes, and the request
    # id and the counts must cover a 404 and every error answer too.
    counted = metrics if settings.metrics_enabled else None
    app.asgi_handler = RequestObserver(app.asgi_handler, counted, AccessLog(settings.log_format))
    return app
