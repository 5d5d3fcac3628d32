"""What the service does on startup: bring the schema to head (or check it is there) and seed the roles."""

from __future__ import annotations

import asyncio
import threading

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.migrations.revisions import Revisions, alembic_config, require_head
from app.services.seeder import RoleSeeder, SeedReport
from app.settings import Settings

# Alembic keeps its `context` in module globals: two migrations in one process at once would share it,
# so in-process runs take turns (other processes are kept apart by the advisory lock in env.py).
_IN_PROCESS_MIGRATION = threading.Lock()


def _upgrade(config: Config) -> None:
    with _IN_PROCESS_MIGRATION:
        command.upgrade(config, "head")


async def bootstrap_database(engine: AsyncEngine, settings: Settings) -> SeedReport:
    """Migrate to head (or require head when migrations run elsewhere), then seed the roles."""
    config = alembic_config(settings, configure_logging=False)
    config.attributes["rebuild_invalid_indexes"] = True
    revisions = Revisions(config)
    if settings.migrate_on_startup:
        # On a connection of env.py's own, outside the pool: the run holds a session lock and session time-outs,
        # and its revisions may commit inside it (autocommit blocks). In a thread: env.py runs its own event loop.
        await asyncio.to_thread(_upgrade, config)
    else:
        async with engine.connect() as connection:
            await connection.run_sync(require_head, revisions.heads)
    async with AsyncSession(engine) as session, session.begin():
        return await RoleSeeder(revisions, settings.api_db_schema).run(session)
