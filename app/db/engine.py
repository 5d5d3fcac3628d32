"""Async engines and connections to the API database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.db.provision import ensure_database, prepare_api_database
from app.db.server import ServerAddress, direct_address
from app.settings import Settings

# How the sessions that change the schema show in pg_stat_activity: the one holding the lock, and those waiting.
MIGRATION_APPLICATION_NAME = "bikerental-api migration"


def create_api_engine(
    address: ServerAddress, settings: Settings, *, application_name: str = "bikerental-api", **kwargs: Any
) -> AsyncEngine:
    """An asyncpg engine on the API database (on API_DB_SCHEMA alone, when set)."""
    server_settings = {"application_name": application_name}
    if settings.api_db_schema:
        server_settings["search_path"] = settings.api_db_schema
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    # hide_parameters: a failed INSERT must not put a password hash into an error message or a log line.
    return create_async_engine(
        address.url(settings.api_db_name), hide_parameters=True, connect_args=connect_args, **kwargs
    )


async def create_lookup_pool(address: ServerAddress, settings: Settings) -> asyncpg.Pool:
    """A small asyncpg pool beside the engine's, for the one read every authenticated request makes.

    Half the engine's size (at least 2): one indexed read per request needs few connections, and the two pools
    together stay within 1.5 x DB_POOL_SIZE connections per process.
    """
    server_settings = {
        "application_name": "bikerental-api",
        "statement_timeout": str(round(settings.db_pool_timeout * 1000)),
    }
    if settings.api_db_schema:
        server_settings["search_path"] = settings.api_db_schema
    return await asyncpg.create_pool(
        host=address.host,
        port=address.port,
        user=address.user,
        password=address.password,
        database=settings.api_db_name,
        min_size=1,
        max_size=max(2, settings.db_pool_size // 2),
        server_settings=server_settings,
        # A server that does not answer fails the request (503) instead of holding it; so does a read stuck behind
        # a lock, through the server's statement_timeout (a client-side command_timeout costs a timer per query).
        timeout=settings.db_pool_timeout,
    )


async def close_lookup_pool(pool: asyncpg.Pool, grace: float = 10.0) -> None:
    """Close the pool, waiting `grace` seconds for requests still using it; then cut their connections."""
    try:
        await asyncio.wait_for(pool.close(), grace)
    except TimeoutError:
        pool.terminate()


@asynccontextmanager
async def _connection(
    address: ServerAddress, settings: Settings, application_name: str
) -> AsyncIterator[AsyncConnection]:
    engine = create_api_engine(address, settings, application_name=application_name, poolclass=sa.NullPool)
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


@asynccontextmanager
async def single_connection(
    settings: Settings, application_name: str = MIGRATION_APPLICATION_NAME
) -> AsyncIterator[AsyncConnection]:
    """One connection of its own to the server itself, outside a transaction, for a command that runs and exits.

    Never through PgBouncer: the session lock and settings a migration takes must last as long as it does.
    """
    address = direct_address(settings)
    await ensure_database(address, settings.api_db_name)
    async with _connection(address, settings, application_name) as connection:
        yield connection


@asynccontextmanager
async def api_connection(settings: Settings) -> AsyncIterator[AsyncConnection]:
    """One connection in one transaction, where the service connects, for a command that runs and exits."""
    address = await prepare_api_database(settings)
    async with _connection(address, settings, "bikerental-api") as connection, connection.begin():
        yield connection
