"""The health checks' queries."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import schema_needs_a_transaction
from app.migrations.revisions import database_revisions


async def database_answers(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database does not answer."""
    # AUTOCOMMIT: no BEGIN/ROLLBACK round trips for a probe that runs every few seconds.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text("SELECT 1"))


async def schema_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The revisions the database is at, read through the pool; raises when the database does not answer."""
    async with engine.connect() as connection:
        if not schema_needs_a_transaction(engine):
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await connection.run_sync(database_revisions)
