"""The live instances a contract revision waits for, read from the registry they keep (see services/presence.py)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlmodel import col, select

from app.db.catalog import table_exists
from app.db.models import DBInstance
from app.migrations.rollout import Instance


def live_instances(connection: sa.Connection) -> Sequence[Instance]:
    """Every instance whose heartbeat has not expired, oldest first; none before the registry exists."""
    if not table_exists(connection, DBInstance.__tablename__):
        return []
    statement = (
        select(DBInstance.heads, DBInstance.host, DBInstance.pid)
        .where(col(DBInstance.expires_at) > sa.func.now())
        .order_by(col(DBInstance.started_at))
    )
    return [Instance(tuple(heads.split("+")), host, pid) for heads, host, pid in connection.execute(statement)]
