"""What the service does on startup: bring the schema to head (or check it is there) and seed the roles."""

from __future__ import annotations

import asyncio
import logging
import threading

from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from app.migrations.instances import live_instances
from app.migrations.lock import run_locked
from app.migrations.revisions import Revisions, alembic_config
from app.migrations.rollout import UpgradePlan, apply_upgrade
from app.services.seeder import RoleSeeder, SeedReport
from app.settings import Settings

# Alembic keeps its `context` in module globals: two migrations in one process at once would share it,
# so in-process runs take turns (other processes are kept apart by the advisory lock in env.py).
_IN_PROCESS_MIGRATION = threading.Lock()
logger = logging.getLogger("app")


def _upgrade(settings: Settings, config: Config, revisions: Revisions) -> UpgradePlan:
    with _IN_PROCESS_MIGRATION:
        return asyncio.run(
            run_locked(
                settings,
                "migration",
                lambda connection: apply_upgrade(connection, config, revisions, live_instances=live_instances),
            )
        )


async def bootstrap_database(engine: AsyncEngine, settings: Settings) -> SeedReport:
    """Migrate as far as the rollout allows (unless migrations run elsewhere), then seed the roles.

    The seeder refuses a schema this release cannot run on: behind its expand revisions, or past a newer release's
    contract revision.
    """
    config = alembic_config(settings, configure_logging=False)
    revisions = Revisions(config)
    if settings.migrate_on_startup:
        # On a connection of its own, outside the pool: the run holds a session lock and session time-outs, and its
        # revisions may commit inside it (autocommit blocks). In a thread, with an event loop of its own: the lock is
        # polled with sleeps, and other apps of this process may be starting on this loop.
        plan = await asyncio.to_thread(_upgrade, settings, config, revisions)
        if waiting := plan.waiting_message():
            logger.warning("%s", waiting)
    async with AsyncSession(engine) as session, session.begin():
        return await RoleSeeder(revisions, settings.api_db_schema).run(session)
