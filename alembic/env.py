"""Alembic environment: the API database only, through asyncpg, one migration run at a time."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext
from pydantic import ValidationError
from sqlmodel import SQLModel

from app.db.catalog import quote_ident
from app.db.engine import single_connection
from app.db.models import API_TABLES
from app.errors import SetupError
from app.migrations.checksums import record_checksums, verify_checksums
from app.migrations.guard import check_database_is_ours
from app.migrations.indexes import invalid_indexes, rebuild_invalid_indexes
from app.migrations.lock import afterwards, migration_session
from app.migrations.revisions import Revisions
from app.migrations.timeouts import concurrent_timeout_statement, timeout_statements, timeouts_explained
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
        version_table_schema=settings.api_db_schema,
    )
    # The same time-outs (and schema) as online, so the SQL a DBA applies (and the migration lint reads) is the SQL
    # we run.
    for statement in timeout_statements(settings):
        context.execute(statement)
    if settings.api_db_schema:
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(settings.api_db_schema)}")
        context.execute(f"SET search_path = {quote_ident(settings.api_db_schema)}")
    AutocommitBlocks(context.get_context())
    with context.begin_transaction():
        context.run_migrations()


class AutocommitBlocks:
    """Gives statements in a revision's `autocommit_block()` their own time-out, and remembers that one ran.

    Concurrent builds take long; and once a block has committed, a later failure no longer leaves nothing changed.
    """

    def __init__(self, migration: MigrationContext) -> None:
        self.entered = False
        block = migration.autocommit_block

        @contextmanager
        def autocommit_block() -> Iterator[None]:
            with block():
                self.entered = True
                leave = concurrent_timeout_statement(settings, inside=False)
                with afterwards(lambda: migration.execute(leave)):
                    migration.execute(concurrent_timeout_statement(settings, inside=True))
                    yield

        # An instance attribute: revisions keep writing the standard `op.get_context().autocommit_block()`.
        migration.autocommit_block = autocommit_block  # type: ignore[method-assign]


def prepare(connection: sa.Connection) -> None:
    """Guard, verify and mend the database before Alembic runs; holding the lock, ending outside a transaction."""
    with timeouts_explained(settings):
        if settings.api_db_schema:
            connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(settings.api_db_schema)}"))
        check_database_is_ours(connection, revisions.known, settings.api_db_schema)
        verify_checksums(connection, revisions.script)
        invalid = invalid_indexes(connection)
    # Committed before Alembic starts: a transaction it finds open would be taken for an outer one, never committed.
    connection.commit()
    if not invalid:
        return
    if config.attributes.get("rebuild_invalid_indexes"):  # `just migrate` and startup; no other command waits on it
        rebuild_invalid_indexes(connection, settings, invalid)
        return
    for index in invalid:
        print(f"warning: {index}", file=sys.stderr)


def do_run_migrations(connection: sa.Connection) -> None:
    # One run at a time for its whole length, autocommit blocks included: a session lock survives their commits.
    with migration_session(connection, settings):
        prepare(connection)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_name=include_name,
            version_table_schema=settings.api_db_schema,
            # In the step's own transaction: a revision's checksum is recorded exactly when it is applied.
            on_version_apply=lambda ctx, **_: record_checksums(connection, revisions.script),
        )
        blocks = AutocommitBlocks(context.get_context())
        with timeouts_explained(settings, committed_midway=lambda: blocks.entered), context.begin_transaction():
            context.run_migrations()
        # Revisions applied before the checksum table existed are recorded now, whether or not anything ran.
        record_checksums(connection, revisions.script)
        connection.commit()


async def run_async_migrations() -> None:
    async with single_connection(settings) as connection:
        await connection.run_sync(do_run_migrations)


def run_migrations_online() -> None:
    # A caller that holds a connection (outside a transaction) may pass it in; otherwise env.py opens its own.
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
