"""Queries on `api_instances`: the running instances, each while its heartbeat lasts."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import func, insert
from sqlmodel import col, delete, update

from app.db.models import DBInstance
from app.repositories.base import Repository

_NOW = func.now()


class InstanceRepository(Repository):
    """The instance registry, written by the instances themselves."""

    async def register(self, instance_id: uuid.UUID, heads: str, host: str, pid: int, lifetime: timedelta) -> None:
        values = {"id": instance_id, "heads": heads, "host": host, "pid": pid, "expires_at": _NOW + lifetime}
        await self.session.exec(insert(DBInstance).values(values))

    async def beat(self, instance_id: uuid.UUID, lifetime: timedelta) -> bool:
        """Push the instance's expiry on; False when its row is gone (it expired meanwhile)."""
        statement = update(DBInstance).where(col(DBInstance.id) == instance_id).values(expires_at=_NOW + lifetime)
        return bool((await self.session.exec(statement)).rowcount)

    async def leave(self, instance_id: uuid.UUID) -> None:
        await self.session.exec(delete(DBInstance).where(col(DBInstance.id) == instance_id))

    async def forget_expired(self) -> int:
        """Delete the rows of instances that stopped beating; how many."""
        statement = delete(DBInstance).where(col(DBInstance.expires_at) <= _NOW)
        return int((await self.session.exec(statement)).rowcount)
