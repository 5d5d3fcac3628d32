"""`just serve`: prepare the database with readable errors, then run uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from types import FrameType
from typing import Any

import sqlalchemy as sa
import uvicorn
from litestar import Litestar
from prometheus_client import CollectorRegistry, start_http_server

from app.db.engine import create_api_engine
from app.db.provision import prepare_api_database
from app.errors import SetupError
from app.http.app import create_app
from app.http.deps import Drain
from app.kit.logs import JsonFormatter, configure_logging
from app.kit.metrics import Metrics
from app.migrations.revisions import show_migration_steps
from app.services.bootstrap import bootstrap_database
from app.settings import Settings


async def _prepare(settings: Settings) -> str:
    # The startup hook's work, done once before uvicorn starts: a refused database, a schema behind head or a
    # lock timeout then ends `just serve` with a one-line error instead of a lifespan traceback.
    address = await prepare_api_database(settings)
    engine = create_api_engine(address, settings, poolclass=sa.NullPool)
    try:
        return (await bootstrap_database(engine, settings)).summary()
    finally:
        await engine.dispose()


class DrainingServer(uvicorn.Server):
    """uvicorn, but on SIGTERM the instance turns not-ready at once and keeps serving for `drain_seconds`.

    A balancer polling /health/ready stops sending requests before the instance stops answering them; uvicorn then
    finishes what is in flight and exits. A second signal, or Ctrl-C, stops at once as before.
    """

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain.started or not self.drain_seconds:
            super().handle_exit(sig, frame)
            return
        self.drain.started = True
        logging.getLogger("app").info("SIGTERM: not ready any more; stopping in %g s", self.drain_seconds)
        timer = threading.Timer(self.drain_seconds, lambda: setattr(self, "should_exit", True))
        timer.daemon = True
        timer.start()


def uvicorn_config(app: Litestar, settings: Settings, **kwargs: Any) -> uvicorn.Config:
    """How every process of the service runs uvicorn: our log lines instead of its access log and its formats."""
    return uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        **kwargs,
    )


def serve_metrics(settings: Settings, registry: CollectorRegistry) -> None:
    """Answer Prometheus' scrapes on METRICS_PORT, on a thread of this process."""
    assert settings.metrics_port is not None
    try:
        start_http_server(settings.metrics_port, addr=settings.api_host, registry=registry)
    except OSError as exc:
        raise SetupError(
            f"cannot serve metrics on {settings.api_host}:{settings.metrics_port}: {exc.strerror or exc}; "
            "free the port or set another METRICS_PORT"
        ) from None
    logging.getLogger("app").info("Metrics on http://%s:%d/metrics", settings.api_host, settings.metrics_port)


def serve(settings: Settings, workers: int | None = None) -> None:
    """Run the service on API_HOST:API_PORT until interrupted: in this process, or in `workers` processes."""
    configure_logging(settings)
    show_migration_steps(JsonFormatter() if settings.log_format == "json" else None)
    where = "embedded PostgreSQL" if settings.embedded else f"{settings.api_db_host}:{settings.api_db_port}"
    logger = logging.getLogger("app")
    logger.info("API database '%s' on %s", settings.api_db_name, where)
    logger.info("%s", asyncio.run(_prepare(settings)))
    if settings.uses_example_secret:
        logger.warning("Tokens are signed with the example JWT_SECRET: set your own before others can reach this")
    workers = workers or settings.web_concurrency
    if workers > 1:
        from app.cli.workers import run_workers

        run_workers(settings, workers)
        return
    metrics = Metrics()
    if settings.metrics_enabled and settings.metrics_port is not None:
        serve_metrics(settings, metrics.registry)
    app = create_app(settings, bootstrapped=True, metrics=metrics)
    # What the process loaded lives as long as it does: the collector need not walk it on every request's cycle.
    gc.collect()
    gc.freeze()
    server = DrainingServer(uvicorn_config(app, settings), app.state.drain, settings.drain_seconds)
    try:
        # As uvicorn.run does: uvicorn raises the Ctrl-C again once it has shut down cleanly.
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        # `uv run` forwards a second Ctrl-C: let the exit handlers (the embedded server's bookkeeping) finish.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not server.started:
        raise SetupError(f"the service did not start on {settings.api_host}:{settings.api_port}; see the lines above")
