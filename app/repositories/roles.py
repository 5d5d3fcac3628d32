"""Queries on `roles`."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select

from app.db.models import DBRole
from app.repositories.base import Repository


class RoleRepository(Repository):
    """Roles, by name."""

    async def insert_missing(self, roles: Mapping[str, str]) -> list[str]:
        """Insert the roles whose names are not taken yet and return the names inserted."""
        # ON CONFLICT, which the ORM has no word for: the unique name decides, so concurrent seeders never fail and
        # never duplicate.
        statement = (
            insert(DBRole)
            .values([{"name": name, "description": description} for name, description in roles.items()])
            .on_conflict_do_nothing(index_elements=[col(DBRole.name)])
            .returning(col(DBRole.name))
        )
        return list((await self.session.exec(statement)).scalars())

    async def names(self) -> list[str]:
        """Every role name, alphabetically."""
        return list((await self.session.exec(select(DBRole.name).order_by(col(DBRole.name)))).all())

    async def id_of(self, name: str, *, lock: bool = False) -> int | None:
        """The id of the role called `name`, or None; `lock` holds the role until the transaction ends."""
        statement = select(DBRole.id).where(col(DBRole.name) == name)
        if lock:
            # FOR NO KEY UPDATE: lockers take turns, while inserts that only reference the role go on.
            statement = statement.with_for_update(key_share=True)
        return (await self.session.exec(statement)).one_or_none()
