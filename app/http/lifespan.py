"""The service's lifespan: what it owns while it runs (engine, lookup pool, hashers, lockout, outbox, background tasks).

It puts them on `app.state`, where the providers in `deps.py` hand them to handlers, and closes them in reverse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db.engine import (
    close_lookup_pool,
    connections_in_use,
    create_api_engine,
    create_lookup_pool,
    lookup_connections_in_use,
)
from app.db.provision import prepare_api_database
from app.kit.lockout import login_lockout
from app.kit.mail import Outbox, mail_backend
from app.kit.metrics import Metrics
from app.kit.passwords import PasswordHashing
from app.migrations.revisions import Revisions, alembic_config
from app.repositories.health import SchemaReadiness
from app.repositories.user_lookup import ActiveUserLookup
from app.services.bootstrap import bootstrap_database
from app.services.maintenance import prune_periodically
from app.services.presence import Presence
from app.settings import Settings

logger = logging.getLogger("app")
Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def service_lifespan(settings: Settings, metrics: Metrics, *, bootstrapped: bool) -> Lifespan:
    """The lifespan of one service process; it migrates and seeds first unless the runner did (`bootstrapped`)."""

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
        presence: Presence | None = None
        beating: asyncio.Task[None] | None = None
        try:
            if not bootstrapped:
                report = await bootstrap_database(engine, settings)
                logger.log(logging.INFO if report.created else logging.DEBUG, "%s", report.summary())
            # Measuring one hash takes a moment of CPU: keep it off the event loop.
            hashing = started_hashing = await asyncio.to_thread(PasswordHashing, settings)
            app.state.engine = engine
            revisions = Revisions(alembic_config(settings, configure_logging=False))
            app.state.schema_readiness = SchemaReadiness(revisions)
            lookup_pool = lookup = await create_lookup_pool(address, settings)
            app.state.user_lookup = ActiveUserLookup(lookup_pool, settings.db_pool_timeout, settings.api_db_schema)
            app.state.session_maker = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
            app.state.hashing = hashing
            app.state.lockout = lockout
            app.state.outbox = outbox
            outbox.start()
            pruning = asyncio.create_task(prune_periodically(app.state.session_maker), name="prune expired")
            # In the registry from here on: a contract revision waits for this release until it stops.
            presence = Presence(app.state.session_maker, revisions.heads, settings.instance_heartbeat_seconds)
            await presence.register()
            beating = asyncio.create_task(presence.keep_beating(), name="heartbeat")
            if settings.metrics_enabled:  # else nobody reads the gauges
                metrics.watch(
                    hash_queue=lambda: started_hashing.pending,
                    pools={
                        "sessions": lambda: connections_in_use(engine),
                        "lookup": lambda: lookup_connections_in_use(lookup),
                    },
                )
                if metrics.polled:  # several workers: the others' scrapes read this one's gauges from its files
                    refreshing = asyncio.create_task(metrics.keep_refreshing(), name="refresh gauges")
            yield
        finally:
            for task in (refreshing, pruning, beating):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if presence is not None:
                await presence.leave()
            await outbox.close()  # queued mails get a few seconds to go out
            if hashing is not None:
                hashing.close()
            await lockout.close()
            try:
                if lookup_pool is not None:
                    await close_lookup_pool(lookup_pool)
            finally:
                await engine.dispose()

    return lifespan
