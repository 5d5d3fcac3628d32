"""What the service does on startup: bring the schema to head (or check it is there) and seed the roles."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.migrations import Revisions, alembic_config, require_head
from app.services.seeder import RoleSeeder, SeedReport
from app.settings import Settings

# Alembic keeps its `context` in module globals: two migrations in one process at once would share it,
# so in-process runs take turns (other processes are kept apart by the advisory lock in env.py).
_IN_PROCESS_MIGRATION = asyncio.Lock()


def _upgrade_on(connection: Connection, config: Config) -> None:
    # env.py runs on this connection instead of starting an event loop of its own (alembic's cookbook recipe).
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def bootstrap_database(engine: AsyncEngine, settings: Settings) -> SeedReport:
    """Migrate to head (or require head when migrations run elsewhere), then seed the roles."""
    config = alembic_config(settings, configure_logging=False)
    revisions = Revisions(config)
    async with _IN_PROCESS_MIGRATION, engine.begin() as connection:
        if settings.migrate_on_startup:
            await connection.run_sync(_upgrade_on, config)
        else:
            await connection.run_sync(require_head, revisions.heads)
    async with AsyncSession(engine) as session, session.begin():
        return await RoleSeeder(revisions).run(session)
