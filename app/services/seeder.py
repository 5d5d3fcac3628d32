"""The idempotent role seeder, run by `just seed` and by the service's startup."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from app.migrations.guard import require_compatible
from app.migrations.revisions import Revisions
from app.repositories.roles import RoleRepository
from app.roles import DEFAULT_ROLES


@dataclass(frozen=True)
class SeedReport:
    created: list[str]
    existing: list[str]

    def summary(self) -> str:
        created = ", ".join(self.created) or "none"
        existing = ", ".join(self.existing) or "none"
        return f"Roles created: {created}; already there: {existing}."


class RoleSeeder:
    """Creates the default roles that are missing; safe to run any number of times, at once too."""

    def __init__(self, revisions: Revisions, api_schema: str | None) -> None:
        self.revisions = revisions
        self.api_schema = api_schema

    async def run(self, session: AsyncSession) -> SeedReport:
        """Seed in the session's transaction; refuses a foreign database, or a schema this release cannot run on."""
        connection = await session.connection()
        await connection.run_sync(require_compatible, self.revisions, self.api_schema)
        created = await RoleRepository(session).insert_missing({str(k): v for k, v in DEFAULT_ROLES.items()})
        existing = [str(name) for name in DEFAULT_ROLES if name not in created]
        return SeedReport(created=created, existing=existing)
