"""Create the API database on its server when it does not exist yet."""

from __future__ import annotations

import asyncpg

from app.db.catalog import quote_ident
from app.db.server import ServerAddress, direct_address, server_address
from app.errors import SetupError
from app.settings import Settings

MAINTENANCE_DATABASES = ("postgres", "template1")


async def connect(address: ServerAddress, database: str) -> asyncpg.Connection:
    """A plain asyncpg connection, for work outside SQLAlchemy (CREATE DATABASE, maintenance)."""
    try:
        return await asyncpg.connect(
            host=address.host, port=address.port, user=address.user, password=address.password, database=database
        )
    except (OSError, asyncpg.CannotConnectNowError) as exc:
        raise SetupError(
            f"cannot reach PostgreSQL at {address.host}:{address.port} ({exc}); "
            "start it, or check API_DB_HOST and API_DB_PORT"
        ) from exc
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise SetupError(
            f"PostgreSQL refused user '{address.user}' ({exc}); check API_DB_USER and API_DB_PASSWORD"
        ) from exc


def _not_through_a_pooler(address: ServerAddress, name: str, said: BaseException) -> SetupError:
    return SetupError(
        f"database '{name}' is not found through the connection pooler at {address.host}:{address.port} ({said}) "
        "and cannot be created through it: set MIGRATION_DB_HOST and MIGRATION_DB_PORT to the PostgreSQL server "
        "behind it, or create the database there"
    )


async def ensure_database(address: ServerAddress, name: str) -> bool:
    """Create database `name` unless it exists; True when this call created it."""
    try:
        conn = await connect(address, name)
    except asyncpg.InvalidCatalogNameError as exc:
        if address.pooler:
            raise _not_through_a_pooler(address, name, exc) from exc
    except asyncpg.ProtocolViolationError as exc:
        # PgBouncer's answer for a database its server lacks, or one it has no entry for; PostgreSQL says 3D000.
        if "database" in str(exc):
            raise _not_through_a_pooler(address, name, exc) from exc
        raise SetupError(f"{address.host}:{address.port} refused a connection to database '{name}': {exc}") from exc
    else:
        await conn.close()
        return False
    maintenance = await _connect_maintenance(address)
    try:
        # CREATE DATABASE cannot run in a transaction; asyncpg's execute runs it on its own.
        await maintenance.execute(f"CREATE DATABASE {quote_ident(name)}")
    except asyncpg.DuplicateDatabaseError:
        return False  # another process created it a moment ago: that is what we wanted
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SetupError(
            f"database '{name}' does not exist and user '{address.user}' may not create it; "
            f"create it as a superuser (CREATE DATABASE {quote_ident(name)} OWNER {quote_ident(address.user)}) "
            "or grant CREATEDB"
        ) from exc
    finally:
        await maintenance.close()
    return True


async def _connect_maintenance(address: ServerAddress) -> asyncpg.Connection:
    for database in MAINTENANCE_DATABASES:
        try:
            return await connect(address, database)
        except asyncpg.InvalidCatalogNameError:
            continue
    raise SetupError(f"found no maintenance database ({', '.join(MAINTENANCE_DATABASES)}) to create databases from")


async def prepare_api_database(settings: Settings) -> ServerAddress:
    """Start the server if it is embedded, create the API database if missing, and return the service's address.

    The database is created on the server itself (MIGRATION_DB_*) when that is set; through a pooler it is only found.
    """
    address = server_address(settings)
    await ensure_database(direct_address(settings) if settings.direct_connection_set else address, settings.api_db_name)
    return address
