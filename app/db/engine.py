"""Async engines and connections to the API database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from app.db.catalog import quote_ident
from app.db.provision import ensure_database, prepare_api_database
from app.db.server import ServerAddress, direct_address
from app.settings import Settings

# How the sessions that change the schema show in pg_stat_activity: the one holding the lock, and those waiting.
# Every session of the API's own (the service, its migrations) carries a name starting with this.
API_APPLICATION_NAME = "bikerental-api"
MIGRATION_APPLICATION_NAME = f"{API_APPLICATION_NAME} migration"


# Set on an engine whose connections go through PgBouncer with API_DB_SCHEMA: each transaction sets the schema.
SEARCH_PATH_PER_TRANSACTION = "bikerental_search_path_per_transaction"
# asyncpg and SQLAlchemy keep no prepared statement: through a transaction pooler the next transaction may run on
# another server connection, where a named statement is missing or already taken. Unnamed ones are parsed again
# with each execution, in the same message as it, so autocommit statements are sound too.
_NO_STATEMENT_CACHE = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}


def create_api_engine(
    address: ServerAddress, settings: Settings, *, application_name: str = API_APPLICATION_NAME, **kwargs: Any
) -> AsyncEngine:
    """An asyncpg engine on the API database (on API_DB_SCHEMA alone, when set)."""
    server_settings = {"application_name": application_name}
    connect_args: dict[str, Any] = {"server_settings": server_settings}
    schema = settings.api_db_schema
    if address.pooler:
        # PgBouncer 1.18 refuses search_path as a startup parameter, and a plain SET would outlive the transaction
        # on a server connection other clients get next: the schema is set for each transaction instead.
        connect_args.update(_NO_STATEMENT_CACHE)
        if schema:
            kwargs["execution_options"] = {**kwargs.get("execution_options", {}), SEARCH_PATH_PER_TRANSACTION: schema}
    elif schema:
        server_settings["search_path"] = schema
    # hide_parameters: a failed INSERT must not put a password hash into an error message or a log line.
    engine = create_async_engine(
        address.url(settings.api_db_name), hide_parameters=True, connect_args=connect_args, **kwargs
    )
    if address.pooler and schema:
        sa.event.listen(engine.sync_engine, "begin", _set_search_path)
    return engine


def _set_search_path(connection: sa.Connection) -> None:
    options = connection.get_execution_options()
    schema = options.get(SEARCH_PATH_PER_TRANSACTION)
    # An AUTOCOMMIT connection has no transaction to set it in: see `schema_needs_a_transaction`.
    if schema and options.get("isolation_level") != "AUTOCOMMIT":
        connection.exec_driver_sql(f"SET LOCAL search_path TO {quote_ident(schema)}")


def schema_needs_a_transaction(engine: AsyncEngine) -> bool:
    """True when the engine's connections find API_DB_SCHEMA only inside a transaction (through PgBouncer)."""
    return SEARCH_PATH_PER_TRANSACTION in engine.get_execution_options()


def lookup_pool_size(settings: Settings) -> int:
    """The lookup pool's connections: twice the engine's DB_POOL_SIZE (every authenticated request reads there)."""
    return 2 * settings.db_pool_size


async def create_lookup_pool(address: ServerAddress, settings: Settings) -> asyncpg.Pool:
    """An asyncpg pool beside the engine's, for the one read every authenticated request makes.

    Twice the engine's size: it carries most of the traffic, and under a saturated event loop a connection stays
    checked out for a whole turn of the loop, so a smaller pool makes requests queue for it (measured: p99 2.4x the
    floor's at DB_POOL_SIZE connections). The two pools together: 3 x DB_POOL_SIZE connections per process. Its
    statement names its schema itself.
    """
    server_settings = {"application_name": API_APPLICATION_NAME}
    limits: dict[str, Any] = {}
    if address.pooler:
        # No statement_timeout as a startup parameter through PgBouncer: a timer per query cancels a stuck read.
        limits = {"statement_cache_size": 0, "command_timeout": settings.db_pool_timeout}
    else:
        server_settings["statement_timeout"] = str(round(settings.db_pool_timeout * 1000))
    return await asyncpg.create_pool(
        host=address.host,
        port=address.port,
        user=address.user,
        password=address.password,
        database=settings.api_db_name,
        min_size=1,
        max_size=lookup_pool_size(settings),
        server_settings=server_settings,
        # A server that does not answer fails the request (503) instead of holding it; so does a read stuck behind
        # a lock, through the server's statement_timeout (a client-side command_timeout costs a timer per query).
        timeout=settings.db_pool_timeout,
        reset=_nothing_to_reset,
        **limits,
    )


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """The lookup pool's release step: its one read runs outside a transaction and changes no session state, so the
    default reset (RESET ALL, UNLISTEN, CLOSE, advisory unlocks: a round trip per request) has nothing to undo.

    asyncpg still rolls back a transaction left open before calling this."""


def connections_in_use(engine: AsyncEngine) -> int:
    """The engine's pool connections checked out now."""
    pool = engine.pool
    return pool.checkedout() if isinstance(pool, QueuePool) else 0


def lookup_connections_in_use(pool: asyncpg.Pool) -> int:
    """The lookup pool's connections acquired now."""
    return int(pool.get_size() - pool.get_idle_size())


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
    async with _connection(address, settings, API_APPLICATION_NAME) as connection, connection.begin():
        yield connection
