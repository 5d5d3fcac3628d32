"""The health checks' queries: does the database answer, and can this release run on its schema."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import schema_needs_a_transaction
from app.migrations.lineage import schema_state
from app.migrations.revisions import Revisions, database_revisions


async def database_answers(engine: AsyncEngine) -> None:
    """Run a trivial query; raises when the database does not answer."""
    # AUTOCOMMIT: no BEGIN/ROLLBACK round trips for a probe that runs every few seconds.
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(sa.text("SELECT 1"))


@dataclass(frozen=True)
class SchemaFit:
    """Whether this release's code can run on the database's schema, and where the schema stands, in one line."""

    fits: bool
    at_head: bool
    said: str


class SchemaReadiness:
    """Reads the database's revisions through the pool and judges them against this release's.

    One query a probe; the lineage is read only for a set of revisions not judged before (each set's verdict stands:
    a rollout changes the revisions, never what an applied revision was).
    """

    def __init__(self, revisions: Revisions) -> None:
        self.revisions = revisions
        self._judged: dict[frozenset[str], SchemaFit] = {revisions.heads: SchemaFit(True, True, "at head")}

    async def check(self, engine: AsyncEngine) -> SchemaFit:
        """Raises when the database does not answer."""
        async with engine.connect() as connection:
            if not schema_needs_a_transaction(engine):
                await connection.execution_options(isolation_level="AUTOCOMMIT")
            current = await connection.run_sync(database_revisions)
            if current not in self._judged:
                state = await connection.run_sync(schema_state, self.revisions)
                problem = state.problem()
                self._judged[current] = SchemaFit(problem is None, state.at_head, problem or state.describe())
        return self._judged[current]
