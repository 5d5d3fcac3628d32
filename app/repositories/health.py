"""The health check's one query."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


async def database_answers(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database does not answer."""
    # AUTOCOMMIT: no BEGIN/ROLLBACK round trips for a probe that runs every few seconds.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text("SELECT 1"))
