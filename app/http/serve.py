"""`just serve`: prepare the database with readable errors, then run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from app.db.engine import api_connection
from app.db.migrations import show_migration_steps
from app.http.app import create_app
from app.settings import Settings


async def _reachable(settings: Settings) -> None:
    # Starts the embedded server and creates the database now, so a failure is a one-line CLI error
    # rather than a lifespan traceback.
    async with api_connection(settings):
        pass


def serve(settings: Settings) -> None:
    """Run the service on API_HOST:API_PORT until interrupted."""
    asyncio.run(_reachable(settings))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    show_migration_steps()
    where = "embedded PostgreSQL" if settings.embedded else f"{settings.api_db_host}:{settings.api_db_port}"
    logging.getLogger("app").info("API database '%s' on %s", settings.api_db_name, where)
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="info",
        )
    finally:
        # `uv run` forwards a second Ctrl-C: let the exit handlers (the embedded server's bookkeeping) finish.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
