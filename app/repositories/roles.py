"""Queries on `roles`."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import DBRole


class RoleRepository:
    """Reads and writes roles in a session; the caller owns the transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_missing(self, roles: Mapping[str, str]) -> list[str]:
        """Insert the roles whose names are not taken yet and return the names inserted."""
        table = DBRole.__table__  # type: ignore[attr-defined]
        statement = (
            insert(table)
            .values([{"name": name, "description": description} for name, description in roles.items()])
            # The unique name decides: concurrent seeders never fail and never duplicate.
            .on_conflict_do_nothing(index_elements=["name"])
            .returning(table.c.name)
        )
        return list((await self.session.execute(statement)).scalars())

    async def names(self) -> list[str]:
        """Every role name, alphabetically."""
        table = DBRole.__table__  # type: ignore[attr-defined]
        return list((await self.session.execute(sa.select(table.c.name).order_by(table.c.name))).scalars())

    async def id_of(self, name: str, *, lock: bool = False) -> int | None:
        """The id of the role called `name`, or None; `lock` holds the role until the transaction ends."""
        table = DBRole.__table__  # type: ignore[attr-defined]
        statement = sa.select(table.c.id).where(table.c.name == name)
        if lock:
            # FOR NO KEY UPDATE: lockers take turns, while inserts that only reference the role go on.
            statement = statement.with_for_update(key_share=True)
        return (await self.session.execute(statement)).scalar_one_or_none()
