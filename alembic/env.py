"""Alembic environment: the API database only, through asyncpg, one migration run at a time."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from app.db.checksums import record_checksums, verify_checksums
from app.db.guard import check_database_is_ours
from app.db.migrations import Revisions, take_migration_lock
from app.db.models import API_TABLES
from app.db.provision import prepare_api_database
from app.db.timeouts import set_migration_timeouts, timeout_statements, timeouts_explained
from app.errors import SetupError
from app.settings import Settings, get_settings

config = context.config
try:
    settings: Settings = config.attributes.get("settings") or get_settings()
except ValidationError as exc:
    # Plain `alembic` then prints `FAILED: <why>` instead of pydantic's traceback.
    reasons = "; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())
    raise SetupError(f"invalid settings: {reasons}") from None

if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    # Keep the loggers that exist already (uvicorn's, the app's) when migrations run in-process.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata
revisions = Revisions(config)
revisions.require_one_head()  # two unmerged heads stop every command here, with the merge command to run


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate looks at the API's own tables only, so it never proposes dropping anyone else's."""
    if type_ == "table":
        return name in API_TABLES
    return True


def run_migrations_offline() -> None:
    """Write the SQL to stdout (`alembic upgrade head --sql`, `just sql`) without a database."""
    context.configure(
        url="postgresql://",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        # The same time-outs as online, so the SQL a DBA applies (and the migration lint reads) is the SQL we run.
        for statement in timeout_statements(settings):
            context.execute(statement)
        context.run_migrations()


def do_run_migrations(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_name=include_name,
    )
    # Lock and guard inside Alembic's transaction: a query before it would open a transaction
    # Alembic never commits, and the migration would silently roll back.
    with context.begin_transaction():
        take_migration_lock(connection)
        set_migration_timeouts(connection, settings)  # after the lock: waiting for another migration is fine
        check_database_is_ours(connection, revisions.known)
        verify_checksums(connection, revisions.script)
        with timeouts_explained(settings):
            context.run_migrations()
        # In the migration's transaction: a revision's checksum is recorded exactly when it is applied.
        record_checksums(connection, revisions.script)


async def run_async_migrations() -> None:
    address = await prepare_api_database(settings)
    engine = create_async_engine(address.url(settings.api_db_name), poolclass=sa.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    # A caller that holds a connection (the service's startup, the tests) passes it in.
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
